"""Tiny models and a tiny tokenizer built in the tests: logic runs in milliseconds, offline."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CORPUS = [
    "The capital of France is Paris.",
    "The capital of Germany is Berlin, a large city.",
    "Water boils at one hundred degrees.",
    "Two plus two is four, and three plus three is six.",
    "A quick brown fox jumps over the lazy dog.",
    "Mount Everest is the highest mountain on Earth.",
] * 20
TOKENIZER_VOCAB = 300  # byte alphabet + merges + 3 specials


def build_tokenizer(chat: bool = True, pad: bool = False):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TOKENIZER_VOCAB,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>" if chat else "<|endoftext|>",
        bos_token="<|endoftext|>" if not chat else None,
        pad_token="<|endoftext|>" if pad else None,
    )
    if chat:
        fast.chat_template = CHAT_TEMPLATE
    return fast


@pytest.fixture
def no_installed_wheels(monkeypatch):
    """As if no distribution were installed: for the errors that name the pip command."""
    from importlib import metadata

    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "distribution", missing)


@pytest.fixture(scope="session")
def tokenizer():
    return build_tokenizer(chat=True)


@pytest.fixture(scope="session")
def plain_tokenizer():
    return build_tokenizer(chat=False)


def build_model(kind: str = "llama", seed: int = 0, vocab: int | None = None):
    """A random 2-layer model; `qwen2` gets a padded vocabulary larger than the tokenizer, as Qwen does."""
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        LlamaConfig,
        LlamaForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    torch.manual_seed(seed)
    if kind == "llama":
        config = LlamaConfig(
            vocab_size=vocab or TOKENIZER_VOCAB,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            tie_word_embeddings=True,
            max_position_embeddings=256,
        )
        model = LlamaForCausalLM(config)
    elif kind == "gpt2":
        config = GPT2Config(
            vocab_size=vocab or TOKENIZER_VOCAB,
            n_embd=32,
            n_layer=2,
            n_head=4,
            n_positions=256,
            bos_token_id=0,
            eos_token_id=0,
        )
        model = GPT2LMHeadModel(config)
    elif kind == "qwen2":
        config = Qwen2Config(
            vocab_size=vocab or TOKENIZER_VOCAB + 20,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            tie_word_embeddings=False,
            max_position_embeddings=256,
        )
        model = Qwen2ForCausalLM(config)
    else:
        raise ValueError(kind)
    # Random init gives near-uniform softmax; sharpen the output so dominant sets are non-trivial.
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(8.0)
    return model.eval()


@pytest.fixture(params=["llama", "gpt2", "qwen2"])
def kind(request):
    return request.param


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """A tiny Llama with a chat tokenizer saved as a local model (`base`), a Sigmoid Head for it
    (`head`) and one for a model with another vocabulary (`qwen_head`)."""
    from peft import get_peft_model

    from sighead_eval import SigmoidHeadConfig

    root = tmp_path_factory.mktemp("tiny")
    build_model("llama").save_pretrained(root / "base")
    build_tokenizer(chat=True).save_pretrained(root / "base")
    get_peft_model(build_model("llama"), SigmoidHeadConfig()).save_pretrained(root / "head")
    get_peft_model(build_model("qwen2"), SigmoidHeadConfig()).save_pretrained(root / "qwen_head")
    return root


ESTIMATOR_PLUGIN = """
from sighead_eval.estimators import TokenEstimator


def _halved(chunk):
    return chunk.own - 0.6931471805599453  # half the softmax probability


HALVED = TokenEstimator("halved", _halved, role="extra", summary="half the softmax")
"""


def write_estimator_plugin(folder: Path) -> None:
    """An installed package (on `sys.path` once `folder` is) declaring the token estimator `halved`
    under the `sighead_eval.estimators` entry point group."""
    (folder / "halved_plugin.py").write_text(ESTIMATOR_PLUGIN)
    info = folder / "halved_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: halved-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[sighead_eval.estimators]\nhalved = halved_plugin:HALVED\n")
