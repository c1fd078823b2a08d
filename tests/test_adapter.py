"""The Sigmoid Head as a PEFT adapter: attach, leave the base untouched, save, load, switch."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from conftest import build_model
from peft import AutoPeftModelForCausalLM, PeftModel, get_peft_model

import sighead_eval  # noqa: F401  (registers SIGMOID_HEAD)
from sighead_eval import SigmoidHeadConfig, SigmoidHeadLayer

IDS = torch.tensor([[5, 17, 42, 99, 3, 250, 7], [1, 2, 3, 4, 5, 6, 7]])


def _head(model) -> SigmoidHeadLayer:
    layer = model.get_base_model().get_output_embeddings()
    assert isinstance(layer, SigmoidHeadLayer)
    return layer


def test_logits_bit_identical_with_adapter_active_and_disabled(kind):
    base = build_model(kind)
    reference = base(IDS).logits.clone()
    model = get_peft_model(base, SigmoidHeadConfig())
    assert torch.equal(model(IDS).logits, reference)
    with model.disable_adapter():
        assert torch.equal(model(IDS).logits, reference)


def test_greedy_generation_identical_with_adapter(kind):
    base = build_model(kind)
    prompt = IDS[:1, :4]
    reference = base.generate(prompt, max_new_tokens=12, do_sample=False, pad_token_id=0)
    model = get_peft_model(base, SigmoidHeadConfig())
    out = model.generate(input_ids=prompt, max_new_tokens=12, do_sample=False, pad_token_id=0)
    assert torch.equal(out, reference)


def test_head_starts_as_a_copy_of_the_lm_head_never_tied():
    base = build_model("llama")  # tied input/output embeddings
    lm_weight = base.get_output_embeddings().weight.detach().clone()
    model = get_peft_model(base, SigmoidHeadConfig())
    head = _head(model).sigmoid_head_embedding["default"].weight
    assert torch.equal(head, lm_weight)
    assert head.data_ptr() != base.get_input_embeddings().weight.data_ptr()
    with torch.no_grad():
        head.add_(1.0)
    assert torch.equal(base.get_input_embeddings().weight, lm_weight)


def test_random_init_when_asked():
    base = build_model("llama")
    model = get_peft_model(base, SigmoidHeadConfig(init_from_lm_head=False))
    head = _head(model).sigmoid_head_embedding["default"].weight
    assert not torch.equal(head, base.get_output_embeddings().base_layer.weight)
    assert head.std().item() == pytest.approx(0.02, rel=0.2)


def test_head_is_fp32_on_a_bf16_model():
    base = build_model("llama").to(torch.bfloat16)
    model = get_peft_model(base, SigmoidHeadConfig())
    assert _head(model).sigmoid_head_embedding["default"].weight.dtype == torch.float32
    out = model(input_ids=IDS, output_sigmoid_logits=True)
    assert out.sigmoid_logits.dtype == torch.float32


def test_only_the_head_is_trainable():
    model = get_peft_model(build_model("gpt2"), SigmoidHeadConfig())
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["base_model.model.lm_head.sigmoid_head_embedding.default.weight"]


def test_sigmoid_logits_only_when_asked():
    model = get_peft_model(build_model("qwen2"), SigmoidHeadConfig())
    assert "sigmoid_logits" not in model(IDS)
    captured = {}
    handle = model.get_base_model().lm_head.register_forward_pre_hook(lambda m, a: captured.update(h=a[0]))
    out = model(input_ids=IDS, output_sigmoid_logits=True)
    handle.remove()
    expected = captured["h"] @ _head(model).sigmoid_head_embedding["default"].weight.T
    assert out.sigmoid_logits.shape == (2, IDS.shape[1], model.config.vocab_size)
    assert torch.allclose(out.sigmoid_logits, expected, atol=1e-6)
    assert "sigmoid_logits" not in model(IDS)  # the request does not stick


def test_sigmoid_logits_through_causal_lm_task_type():
    model = get_peft_model(build_model("llama"), SigmoidHeadConfig(task_type="CAUSAL_LM"))
    out = model(input_ids=IDS, output_sigmoid_logits=True)
    assert out.sigmoid_logits.shape[-1] == 300


def test_save_holds_the_head_only(tmp_path):
    model = get_peft_model(build_model("llama"), SigmoidHeadConfig())
    model.save_pretrained(tmp_path)
    from safetensors import safe_open

    with safe_open(str(tmp_path / "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert keys == ["base_model.model.lm_head.sigmoid_head_embedding.weight"]
    size = os.path.getsize(tmp_path / "adapter_model.safetensors")
    assert 300 * 32 * 4 <= size < 300 * 32 * 4 + 1024
    assert json.loads((tmp_path / "adapter_config.json").read_text())["peft_type"] == "SIGMOID_HEAD"


def test_roundtrip_peft_model_from_pretrained(tmp_path, kind):
    model = get_peft_model(build_model(kind), SigmoidHeadConfig())
    with torch.no_grad():
        _head(model).sigmoid_head_embedding["default"].weight.normal_()
    expected = model(input_ids=IDS, output_sigmoid_logits=True).sigmoid_logits
    model.save_pretrained(tmp_path)
    loaded = PeftModel.from_pretrained(build_model(kind), tmp_path)
    assert torch.equal(loaded(input_ids=IDS, output_sigmoid_logits=True).sigmoid_logits, expected)


def test_head_dtype_is_kept_as_configured():
    model = get_peft_model(build_model("llama"), SigmoidHeadConfig(head_dtype="bfloat16"))
    assert _head(model).sigmoid_head_embedding["default"].weight.dtype == torch.bfloat16


def test_half_precision_head_loads_back_into_fp32(tmp_path):
    from safetensors import safe_open

    from sighead_eval.models import save_adapter

    model = get_peft_model(build_model("llama"), SigmoidHeadConfig())
    weight = _head(model).sigmoid_head_embedding["default"].weight
    save_adapter(model, tmp_path, storage_dtype="float16")
    with safe_open(str(tmp_path / "adapter_model.safetensors"), "pt") as f:
        assert f.get_tensor(f.keys()[0]).dtype == torch.float16
    loaded = PeftModel.from_pretrained(build_model("llama"), tmp_path)
    head = _head(loaded).sigmoid_head_embedding["default"].weight
    assert head.dtype == torch.float32
    assert torch.equal(head, weight.half().float())
    assert not torch.equal(head, weight)  # the file really was half precision


def test_auto_peft_model_and_transformers_load_adapter(tmp_path):
    base_dir, adapter_dir = tmp_path / "base", tmp_path / "adapter"
    from transformers import AutoModelForCausalLM

    build_model("llama").save_pretrained(base_dir)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir), SigmoidHeadConfig())
    with torch.no_grad():
        _head(model).sigmoid_head_embedding["default"].weight.normal_()
    expected = model(input_ids=IDS, output_sigmoid_logits=True).sigmoid_logits
    model.save_pretrained(adapter_dir)

    auto = AutoPeftModelForCausalLM.from_pretrained(adapter_dir)
    assert torch.equal(auto(input_ids=IDS, output_sigmoid_logits=True).sigmoid_logits, expected)

    plain = AutoModelForCausalLM.from_pretrained(base_dir)
    plain.load_adapter(str(adapter_dir))
    assert torch.equal(plain(input_ids=IDS, output_sigmoid_logits=True).sigmoid_logits, expected)


def test_pickled_weights_are_refused_on_every_loading_route(tmp_path):
    """PEFT and transformers fall back to a pickled adapter_model.bin; a Sigmoid Head never does."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    base_dir, adapter_dir = tmp_path / "base", tmp_path / "adapter"
    build_model("llama").save_pretrained(base_dir)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir), SigmoidHeadConfig())
    model.save_pretrained(adapter_dir)
    weights = adapter_dir / "adapter_model.safetensors"
    torch.save(load_file(str(weights)), adapter_dir / "adapter_model.bin")  # what PEFT would fall back to
    weights.unlink()
    refused = r"has no adapter_model.safetensors \(found \['adapter_model.bin'\]: pickled weights are never"
    with pytest.raises(FileNotFoundError, match=refused):
        PeftModel.from_pretrained(build_model("llama"), adapter_dir)
    with pytest.raises(FileNotFoundError, match=refused):
        AutoPeftModelForCausalLM.from_pretrained(adapter_dir)
    with pytest.raises(FileNotFoundError, match=refused):
        AutoModelForCausalLM.from_pretrained(base_dir).load_adapter(str(adapter_dir))


def test_named_adapters_and_set_adapter():
    model = get_peft_model(build_model("gpt2"), SigmoidHeadConfig(), adapter_name="a")
    model.add_adapter("b", SigmoidHeadConfig(init_from_lm_head=False))
    model.set_adapter("a")
    a = model(input_ids=IDS, output_sigmoid_logits=True).sigmoid_logits
    model.set_adapter("b")
    b = model(input_ids=IDS, output_sigmoid_logits=True).sigmoid_logits
    assert not torch.allclose(a, b)
    assert torch.allclose(b, model(input_ids=IDS, output_sigmoid_logits=True).sigmoid_logits)


def test_unload_gives_back_the_base_model():
    base = build_model("llama")
    reference = base(IDS).logits.clone()
    model = get_peft_model(base, SigmoidHeadConfig())
    plain = model.unload()
    assert isinstance(plain.lm_head, torch.nn.Linear)
    assert not any("sigmoid_head" in n for n, _ in plain.named_parameters())
    assert torch.equal(plain(IDS).logits, reference)
    assert "sigmoid_logits" not in plain(IDS)


def test_merge_is_refused():
    model = get_peft_model(build_model("llama"), SigmoidHeadConfig())
    with pytest.raises(ValueError, match="cannot be merged"):
        model.merge_and_unload()


def test_adapter_for_another_vocabulary_names_both_shapes(tmp_path):
    get_peft_model(build_model("llama", vocab=400), SigmoidHeadConfig()).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"\[400, 32\].*\[300, 32\]"):
        PeftModel.from_pretrained(build_model("llama"), tmp_path)


@pytest.mark.parametrize("name", ["t5", "bart", "marian", "opt", "gemma"])
def test_output_head_found_for_other_architectures(name):
    from transformers import (
        BartConfig,
        BartForConditionalGeneration,
        GemmaConfig,
        GemmaForCausalLM,
        MarianConfig,
        MarianMTModel,
        OPTConfig,
        OPTForCausalLM,
        T5Config,
        T5ForConditionalGeneration,
    )

    small = {"vocab_size": 64}
    bart_like = {
        "d_model": 16,
        "encoder_layers": 1,
        "decoder_layers": 1,
        "encoder_attention_heads": 2,
        "decoder_attention_heads": 2,
        "encoder_ffn_dim": 32,
        "decoder_ffn_dim": 32,
    }
    models = {
        "t5": lambda: T5ForConditionalGeneration(
            T5Config(
                **small, d_model=16, d_ff=32, num_layers=1, num_heads=2, d_kv=8, decoder_start_token_id=0
            )
        ),
        "bart": lambda: BartForConditionalGeneration(
            BartConfig(
                **small,
                **bart_like,
            )
        ),
        "marian": lambda: MarianMTModel(
            MarianConfig(
                **small,
                **bart_like,
                pad_token_id=1,
                decoder_start_token_id=1,
            )
        ),
        "opt": lambda: OPTForCausalLM(
            OPTConfig(
                **small,
                hidden_size=16,
                ffn_dim=32,
                num_hidden_layers=1,
                num_attention_heads=2,
                word_embed_proj_dim=16,
            )
        ),
        "gemma": lambda: GemmaForCausalLM(
            GemmaConfig(
                **small,
                hidden_size=16,
                intermediate_size=32,
                num_hidden_layers=1,
                num_attention_heads=2,
                num_key_value_heads=1,
                head_dim=8,
            )
        ),
    }
    torch.manual_seed(0)
    # Frozen before the reference pass, as PEFT freezes it: T5 takes another kernel path with grads.
    base = models[name]().eval().requires_grad_(False)
    ids = torch.tensor([[3, 4, 5, 6]])
    kwargs = {"decoder_input_ids": ids} if base.config.is_encoder_decoder else {}
    reference = base(input_ids=ids, **kwargs).logits.clone()
    model = get_peft_model(base, SigmoidHeadConfig())
    assert model.peft_config["default"].head_module == "lm_head"
    out = model(input_ids=ids, output_sigmoid_logits=True, **kwargs)
    assert torch.equal(out.logits, reference)
    assert out.sigmoid_logits.shape == reference.shape


def test_model_without_output_head_is_refused():
    class NoHead(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(4, 4)

        def forward(self, x):
            return self.proj(x)

    with pytest.raises(ValueError, match="Could not find the output head of NoHead.*head_module"):
        get_peft_model(NoHead(), SigmoidHeadConfig())


def test_unknown_head_module_is_refused():
    with pytest.raises(ValueError, match="`head_module` 'decoder_head' is not a module.*'lm_head'"):
        get_peft_model(build_model("llama"), SigmoidHeadConfig(head_module="decoder_head"))


def test_head_module_that_is_not_linear_is_refused():
    with pytest.raises(ValueError, match="'model.norm' is a LlamaRMSNorm without a 2-D `weight`"):
        get_peft_model(build_model("llama"), SigmoidHeadConfig(head_module="model.norm"))


def test_bad_head_dtype_is_refused():
    with pytest.raises(ValueError, match="`head_dtype` should be one of .* got 'int8'"):
        SigmoidHeadConfig(head_dtype="int8")


def test_log_softmax_offset_head_starts_at_sigmoid_of_log_p(tokenizer, tmp_path):
    """An untrained head with the log_softmax offset scores sigmoid(log p) = p / (1 + p): it ranks
    tokens exactly as the softmax does, on the cheap path and on the full-logits path."""
    from peft import PeftModel

    from sighead_eval.scoring import score

    model = get_peft_model(build_model("llama"), SigmoidHeadConfig(offset="log_softmax")).eval()
    [r] = score(
        model, tokenizer, [{"prompt": "The capital", "response": "of France is Paris."}], progress=False
    )
    p = np.exp(r.log_scores["softmax"])
    np.testing.assert_allclose(np.exp(r.log_scores["sigmoid"]), p / (1 + p), rtol=1e-5)
    with torch.no_grad():
        out = model(torch.tensor([[5, 6, 7]]), output_sigmoid_logits=True)
    torch.testing.assert_close(out.sigmoid_logits, torch.log_softmax(out.logits, -1), atol=1e-5, rtol=0)
    model.save_pretrained(tmp_path / "head")
    loaded = PeftModel.from_pretrained(build_model("llama"), tmp_path / "head")
    [again] = score(
        loaded, tokenizer, [{"prompt": "The capital", "response": "of France is Paris."}], progress=False
    )
    np.testing.assert_allclose(again.log_scores["sigmoid"], r.log_scores["sigmoid"], atol=1e-6)
    with pytest.raises(ValueError, match=r"`offset` should be one of \('none', 'log_softmax'\)"):
        SigmoidHeadConfig(offset="softmax")


def test_the_compact_format_keeps_only_changed_rows_and_loads_back_exactly(tmp_path):
    """`storage='rows'`: the file holds the rows that differ from the LM head; every loading
    route puts the others back from the base model; a model of another vocabulary is refused."""
    import os

    from peft import PeftModel

    from sighead_eval.adapter.heads import check_adapter_fits
    from sighead_eval.adapter.io import adapter_head_shape, save_adapter

    model = get_peft_model(build_model("llama"), SigmoidHeadConfig())
    head = model.get_base_model().lm_head.sigmoid_head_embedding["default"].weight
    with torch.no_grad():
        head[[3, 17, 40]] += 0.5
    save_adapter(model, tmp_path / "full", storage_dtype=None)
    save_adapter(model, tmp_path / "rows", storage_dtype=None, storage="rows")
    full_size = os.path.getsize(tmp_path / "full" / "adapter_model.safetensors")
    rows_size = os.path.getsize(tmp_path / "rows" / "adapter_model.safetensors")
    assert rows_size < full_size / 10
    assert adapter_head_shape(tmp_path / "rows") == tuple(head.shape)
    loaded = PeftModel.from_pretrained(build_model("llama"), tmp_path / "rows")
    again = loaded.get_base_model().lm_head.sigmoid_head_embedding["default"].weight
    assert torch.equal(again, head)
    from sighead_eval.curves import load_head

    lm = model.get_base_model().lm_head.get_base_layer().weight
    assert torch.equal(load_head(tmp_path / "rows", lm)[0], head) and torch.equal(
        load_head(tmp_path / "full", lm)[0], head
    )
    other = get_peft_model(build_model("qwen2"), SigmoidHeadConfig())
    with pytest.raises(ValueError, match="does not fit"):
        other.load_adapter(str(tmp_path / "rows"), adapter_name="x")
    base = tmp_path / "base"
    build_model("qwen2").save_pretrained(base)
    with pytest.raises(ValueError, match="does not fit"):
        check_adapter_fits(tmp_path / "rows", str(base))


def test_a_low_rank_head_approximates_the_difference_and_loads_anywhere(tmp_path):
    """`storage='lowrank'`: a truncated SVD of the head minus the LM head; full rank gives the
    head back, a lower rank a close one, and the error shrinks as the rank grows."""
    from peft import PeftModel

    from sighead_eval.models import adapter_head_shape, save_adapter

    model = get_peft_model(build_model("llama"), SigmoidHeadConfig())
    head = model.get_base_model().lm_head.sigmoid_head_embedding["default"].weight
    with torch.no_grad():
        head += 0.05 * torch.randn_like(head)
    errors = []
    for rank in (2, 8, head.shape[1]):
        save_adapter(model, tmp_path / f"r{rank}", storage_dtype=None, storage="lowrank", rank=rank)
        assert adapter_head_shape(tmp_path / f"r{rank}") == tuple(head.shape)
        loaded = PeftModel.from_pretrained(build_model("llama"), tmp_path / f"r{rank}")
        again = loaded.get_base_model().lm_head.sigmoid_head_embedding["default"].weight
        errors.append(float((again - head).norm()))
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-4
    with pytest.raises(ValueError, match="`rank` should be an integer"):
        save_adapter(model, tmp_path / "bad", storage="lowrank", rank=0)


def test_compress_writes_a_smaller_copy_and_measures_its_error(tmp_path, capsys, tokenizer):
    """`sighead-eval compress`: the copy is smaller, loads back through the usual route, and the
    printed error is the copy's own (0 for rows, between 0 and 1 for a low rank)."""
    from peft import PeftModel

    from sighead_eval.adapter.heads import compress_adapter
    from sighead_eval.adapter.io import save_adapter
    from sighead_eval.cli import main

    model = get_peft_model(build_model("llama"), SigmoidHeadConfig())
    head = model.get_base_model().lm_head.sigmoid_head_embedding["default"].weight
    with torch.no_grad():
        head += 0.05 * torch.randn_like(head)
    save_adapter(model, tmp_path / "head", storage_dtype=None)
    build_model("llama").save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    base = str(tmp_path / "base")
    low = compress_adapter(
        tmp_path / "head", tmp_path / "low", "lowrank", 2, model=base, storage_dtype="float32"
    )
    again = PeftModel.from_pretrained(build_model("llama"), tmp_path / "low")
    delta = head - model.get_base_model().lm_head.get_base_layer().weight
    got = again.get_base_model().lm_head.sigmoid_head_embedding["default"].weight - head
    assert low["relative_error"] == pytest.approx(float(got.norm() / delta.norm()), rel=1e-4)
    assert 0 < low["relative_error"] < 1 and low["bytes_after"] < low["bytes_before"]
    rows = compress_adapter(tmp_path / "head", tmp_path / "rows", "rows", model=base, storage_dtype="float32")
    assert rows["relative_error"] == 0.0 and rows["rank"] is None
    assert main(["compress", str(tmp_path / "head"), "--output", str(tmp_path / "cli"), "--rank", "4",
                 "--model", base, "--storage-dtype", "float32"]) == 0  # fmt: skip
    assert "rank 4" in capsys.readouterr().out
    with pytest.raises(ValueError, match="`rank` should be an integer"):
        compress_adapter(tmp_path / "head", tmp_path / "bad", "lowrank", 0, model=base)


def test_init_head_writes_an_untrained_head_of_a_few_bytes(tmp_path, capsys, tokenizer):
    """`sighead-eval init-head`: the written head is the output layer (sigmoid(log p) with the
    offset), stored as no changed rows; an existing adapter is not overwritten; a bad offset is
    refused before the model loads."""
    from peft import PeftModel

    from sighead_eval.adapter.heads import init_head
    from sighead_eval.cli import main
    from sighead_eval.scoring import score

    build_model("llama").save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    base = str(tmp_path / "base")
    args = ["init-head", "--model", base, "--offset", "log_softmax", "--output", str(tmp_path / "h")]
    assert main(args) == 0
    assert "untrained head (offset 'log_softmax')" in capsys.readouterr().out
    config = json.loads((tmp_path / "h" / "adapter_config.json").read_text())
    assert config["offset"] == "log_softmax" and config["init_from_lm_head"] is True
    assert config["base_model_name_or_path"] == base
    card = (tmp_path / "h" / "README.md").read_text()
    assert "**not trained**" in card and f"--model {base} --offset log_softmax" in card
    assert os.path.getsize(tmp_path / "h" / "adapter_model.safetensors") < 1024  # no rows stored
    loaded = PeftModel.from_pretrained(build_model("llama"), tmp_path / "h").eval()
    record = {"prompt": "The capital", "response": "of France is Paris."}
    [r] = score(loaded, tokenizer, [record], progress=False)
    p = np.exp(r.log_scores["softmax"])
    np.testing.assert_allclose(np.exp(r.log_scores["sigmoid"]), p / (1 + p), rtol=1e-5)
    with pytest.raises(ValueError, match="already holds an adapter"):
        init_head(tmp_path / "h", base)
    with pytest.raises(ValueError, match=r"`offset` should be one of \('none', 'log_softmax'\), got 'soft'"):
        init_head(tmp_path / "other", "/nonexistent/model", offset="soft")
