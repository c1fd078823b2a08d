"""The authors' released heads: a head in exactly their layout (one `[vocab, hidden]` tensor
`weight` in model.safetensors, beside a config.json) converts into an adapter that loads through
every PEFT route and scores `logsigmoid(h . W[y])`."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from sighead_eval.adapter.authors import import_head
from sighead_eval.scoring import ScoringOptions, encode_records, score

RECORD = {"prompt": "What is the capital of France?", "response": "The capital of France is Paris."}


def authors_head(folder, vocab=300, hidden=32, dtype=torch.float32, tensors=None, seed=0):
    """A head written the way the authors release theirs."""
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    weight = (torch.randn(vocab, hidden, generator=g) * 0.3).to(dtype)
    save_file(tensors if tensors is not None else {"weight": weight}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"vocab_size": vocab, "hidden_size": hidden}))
    return weight


def _by_hand(base, tokenizer, weight):
    """logsigmoid(h . W[y]) for the record's response tokens, from the plain model's head inputs."""
    [item] = encode_records(base, tokenizer, [RECORD], ScoringOptions(), need_response=True)
    ids = item.prompt_ids + item.response_ids
    captured = []
    handle = base.get_output_embeddings().register_forward_pre_hook(lambda m, a: captured.append(a[0]))
    with torch.no_grad():
        base(input_ids=torch.tensor([ids]))
    handle.remove()
    start = len(item.prompt_ids)
    h = captured[0][0, start - 1 : len(ids) - 1].float()  # (R, H) the inputs that predict the response
    y = torch.tensor(item.response_ids)
    return torch.nn.functional.logsigmoid((h * weight.float()[y]).sum(-1)).numpy()


def test_an_authors_head_converts_and_scores_logsigmoid_of_h_dot_w(tiny_dir, tmp_path):
    from peft import AutoPeftModelForCausalLM, PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sighead_eval.models import load_model

    weight = authors_head(tmp_path / "released")
    out = import_head(tmp_path / "released", str(tiny_dir / "base"), tmp_path / "adapter")
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["offset"] == "none" and config["head_dtype"] == "float32"
    assert (
        config["base_model_name_or_path"] == str(tiny_dir / "base") and config["peft_type"] == "SIGMOID_HEAD"
    )
    assert "released" in (out / "README.md").read_text()

    tokenizer = AutoTokenizer.from_pretrained(tiny_dir / "base")
    plain = AutoModelForCausalLM.from_pretrained(tiny_dir / "base").eval()
    expected = _by_hand(plain, tokenizer, weight)
    routes = {
        "load_model": load_model(str(tiny_dir / "base"), adapter=out)[0],
        "PeftModel": PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_dir / "base"), out),
        "AutoPeftModel": AutoPeftModelForCausalLM.from_pretrained(out),
    }
    transformers_route = AutoModelForCausalLM.from_pretrained(tiny_dir / "base")
    transformers_route.load_adapter(str(out))
    routes["transformers load_adapter"] = transformers_route
    for route, model in routes.items():
        [result] = score(model.eval(), tokenizer, [RECORD], progress=False)
        assert result.log_scores["sigmoid"] == pytest.approx(expected, abs=1e-5), route


def test_the_files_dtype_is_kept(tiny_dir, tmp_path):
    from transformers import AutoTokenizer

    from sighead_eval.models import load_model

    weight = authors_head(tmp_path / "released", dtype=torch.bfloat16)
    out = import_head(tmp_path / "released", str(tiny_dir / "base"), tmp_path / "adapter")
    assert json.loads((out / "adapter_config.json").read_text())["head_dtype"] == "bfloat16"
    model, _ = load_model(str(tiny_dir / "base"), adapter=out)
    head = model.get_base_model().get_output_embeddings().active_head()
    assert head.dtype == torch.bfloat16 and torch.equal(head, weight)
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir / "base")
    [result] = score(model, tokenizer, [RECORD], progress=False)
    base = model.get_base_model()
    with model.disable_adapter():
        expected = _by_hand(base, tokenizer, weight)
    assert result.log_scores["sigmoid"] == pytest.approx(expected, abs=0.05)  # bf16 arithmetic


@pytest.mark.parametrize(
    ("layout", "error", "message"),
    [
        (
            {"weight": torch.zeros(300, 32), "bias": torch.zeros(300)},
            ValueError,
            r"holds 2 tensors.*exactly one",
        ),
        ({"weight": torch.zeros(300)}, ValueError, r"has shape \[300\]; a head is \[vocab, hidden\]"),
        ({"weight": torch.zeros(300, 32, dtype=torch.int64)}, ValueError, "is I64; a head is floating point"),
        ({"weight": torch.zeros(320, 32)}, ValueError, r"does not fit the model.*\[320, 32\].*\[300, 32\]"),
    ],
)
def test_anything_but_one_fitting_head_tensor_is_refused(tiny_dir, tmp_path, layout, error, message):
    authors_head(tmp_path / "released", tensors=layout)
    with pytest.raises(error, match=message):
        import_head(tmp_path / "released", str(tiny_dir / "base"), tmp_path / "adapter")
    assert not (tmp_path / "adapter" / "adapter_model.safetensors").exists()


def test_missing_sources_say_what_was_expected(tiny_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="has no model.safetensors; the authors' format"):
        import_head(tmp_path / "empty", str(tiny_dir / "base"), tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="neither a local folder nor a hub repository"):
        import_head("nobody/no-such-head", str(tiny_dir / "base"), tmp_path / "out")


def test_import_head_command(tiny_dir, tmp_path, capsys):
    from sighead_eval.cli import main

    authors_head(tmp_path / "released")
    args = ["import-head", str(tmp_path / "released"), "--model", str(tiny_dir / "base")]
    assert main([*args, "--output", str(tmp_path / "adapter")]) == 0
    assert "wrote the adapter" in capsys.readouterr().out
    before = (tmp_path / "adapter" / "adapter_model.safetensors").read_bytes()
    assert main([*args, "--output", str(tmp_path / "adapter")]) == 2  # an adapter is never overwritten
    assert "already holds an adapter" in capsys.readouterr().err
    assert (tmp_path / "adapter" / "adapter_model.safetensors").read_bytes() == before
    authors_head(tmp_path / "other", vocab=320)
    assert (
        main(
            [
                "import-head",
                str(tmp_path / "other"),
                "--model",
                str(tiny_dir / "base"),
                "--output",
                str(tmp_path / "x"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "does not fit the model" in err
