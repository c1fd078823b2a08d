"""`sighead-eval score`: JSONL in, JSONL out, atomic writes, clear errors."""

from __future__ import annotations

import json
import math

import pytest
from conftest import build_model
from peft import get_peft_model

from sighead_eval import SigmoidHeadConfig
from sighead_eval.cli import build_parser, main


@pytest.fixture
def model_dir(tmp_path, tokenizer):
    build_model("llama").save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    get_peft_model(build_model("llama"), SigmoidHeadConfig()).save_pretrained(tmp_path / "head")
    return tmp_path


def _score_args(model_dir, model="base", *extra):
    return [
        "score",
        "--input",
        str(model_dir / "in.jsonl"),
        "--output",
        str(model_dir / "out.jsonl"),
        "--model",
        str(model_dir / model),
        *extra,
    ]


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_score_jsonl_roundtrip(model_dir):
    _write(
        model_dir / "in.jsonl",
        [{"id": 1, "prompt": "Hi", "response": "Water boils."}, {"id": 2, "prompt": "Hi", "response": ""}],
    )
    args = _score_args(model_dir, "base", "--adapter", str(model_dir / "head"), "--batch-size", "2")
    assert main(args) == 0
    rows = [json.loads(line) for line in (model_dir / "out.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [1, 2]
    assert "".join(rows[0]["tokens"]["text"]) == "Water boils."
    assert set(rows[0]["sequence"]) >= {"sigmoid_mean", "softmax_prod", "boostedprob_min", "entropy_mean"}
    assert rows[1]["empty_response"] is True


def test_score_generate_without_tokens(model_dir, capsys):
    _write(model_dir / "in.jsonl", [{"prompt": "Hi"}])
    args = _score_args(model_dir, "base", "--generate", "--max-new-tokens", "5", "--no-tokens")
    assert main(args) == 0
    row = json.loads((model_dir / "out.jsonl").read_text())
    assert row["n_tokens"] == 5 and "tokens" not in row
    assert "sigmoid_mean" not in row["sequence"]  # no adapter given: softmax baselines only
    assert "warning: no --adapter" in capsys.readouterr().err  # ... and it says so
    assert main([*args, "--no-adapter"]) == 0
    assert "warning" not in capsys.readouterr().err  # on purpose: silent


def test_adapter_and_no_adapter_contradict(model_dir, capsys):
    _write(model_dir / "in.jsonl", [{"prompt": "Hi", "response": "x"}])
    assert main(_score_args(model_dir, "base", "--adapter", str(model_dir / "head"), "--no-adapter")) == 2
    assert "--adapter and --no-adapter contradict each other" in capsys.readouterr().err


@pytest.mark.integration
def test_score_on_the_embedded_model_defaults_to_the_shipped_head(tmp_path, capsys):
    _write(tmp_path / "in.jsonl", [{"prompt": "What is the capital of France?", "response": "Paris."}])
    args = ["score", "--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "out.jsonl")]
    assert main([*args, "--no-tokens"]) == 0
    assert "using the shipped head" in capsys.readouterr().err
    row = json.loads((tmp_path / "out.jsonl").read_text())
    assert {"sigmoid_mean", "hybrid_prod"} <= set(row["sequence"])


def test_a_file_that_is_not_utf8_names_the_file_and_line(model_dir, no_model_loading, capsys):
    (model_dir / "in.jsonl").write_bytes(b'{"prompt": "Hi", "response": "x"}\n{"prompt": "caf\xe9"}\n')
    assert main(_score_args(model_dir)) == 2
    err = capsys.readouterr().err
    assert "in.jsonl, line 2: not UTF-8 text (byte 0xe9" in err and "save the file as UTF-8" in err


def test_bad_json_line_fails_before_model_work_and_keeps_the_old_output(model_dir, capsys):
    (model_dir / "in.jsonl").write_text('{"prompt": "Hi", "response": "x"}\n{oops\n')
    (model_dir / "out.jsonl").write_text("previous results\n")
    args = _score_args(model_dir, "does-not-exist")
    assert main(args) == 2
    assert "in.jsonl, line 2: not valid JSON" in capsys.readouterr().err
    assert (model_dir / "out.jsonl").read_text() == "previous results\n"


def test_bad_record_keeps_the_old_output(model_dir, capsys):
    _write(model_dir / "in.jsonl", [{"question": "Hi"}])
    (model_dir / "out.jsonl").write_text("previous results\n")
    args = _score_args(model_dir)
    assert main(args) == 2
    assert "in.jsonl, line 1: has keys ['question']" in capsys.readouterr().err
    assert (model_dir / "out.jsonl").read_text() == "previous results\n"


def test_help_comes_from_the_config_metadata():
    text = build_parser()._subparsers._group_actions[0].choices["score"].format_help()
    assert "Dominant-token rule: relative drop that marks a rank." in text
    assert "--no-chat-template" in text and "--max-new-tokens" in text


@pytest.fixture
def no_model_loading(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("no model work may start on bad input")

    monkeypatch.setattr("sighead_eval.models.load_model", refuse)


def test_nan_in_a_pass_through_field_fails_before_model_work(model_dir, no_model_loading, capsys):
    (model_dir / "in.jsonl").write_text('{"prompt": "Hi", "response": "x", "meta": {"score": NaN}}\n')
    assert main(_score_args(model_dir)) == 2
    assert "in.jsonl, line 1: field `meta.score` holds a non-finite number" in capsys.readouterr().err


def test_a_directory_as_input_or_a_missing_model_path_is_one_clear_line(model_dir, capsys):
    args = _score_args(model_dir)
    args[args.index("--input") + 1] = str(model_dir)
    assert main(args) == 2
    assert "is a directory; give a JSONL file" in capsys.readouterr().err
    _write(model_dir / "in.jsonl", [{"prompt": "Hi", "response": "x"}])
    args = _score_args(model_dir)
    args[args.index("--model") + 1] = "./no/such/model"
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "model './no/such/model': no such directory" in err and "Traceback" not in err


def test_chat_content_as_text_parts_or_null(model_dir):
    from sighead_eval.scoring import ScoringOptions, encode_records

    user = {"role": "user", "content": [{"type": "text", "text": "Hi"}]}
    parts = [{"type": "text", "text": "Water "}, {"type": "text", "text": "boils."}]
    plain = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Water boils."}]
    _write(
        model_dir / "in.jsonl",
        [{"messages": [user, {"role": "assistant", "content": parts}]}, {"messages": plain}],
    )
    assert main(_score_args(model_dir)) == 0
    joined, reference = [json.loads(line) for line in (model_dir / "out.jsonl").read_text().splitlines()]
    assert joined["response"] == "Water boils." and joined["tokens"]["id"] == reference["tokens"]["id"]
    assert joined["sequence"] == pytest.approx(reference["sequence"])
    null = {"messages": [{"role": "user", "content": None}, {"role": "assistant", "content": "x"}]}
    with pytest.raises(TypeError, match=r"record 0, message 0: `content` should be a string .* \(null\)"):
        encode_records(build_model("llama"), _tokenizer(model_dir), [null], ScoringOptions(), True)


def _tokenizer(model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir / "base")


def test_token_ids_outside_the_vocabulary_are_refused(model_dir):
    from sighead_eval.scoring import ScoringOptions, encode_records

    model, tok = build_model("llama"), _tokenizer(model_dir)
    vocab = model.get_output_embeddings().weight.shape[0]
    for key, value in (("prompt_token_ids", [1, vocab]), ("response_token_ids", [-1])):
        record = {"prompt_token_ids": [1, 2], "response": "x", key: value}
        with pytest.raises(ValueError, match=f"record 0: `{key}` holds ids outside the model's vocabulary"):
            encode_records(model, tok, [record], ScoringOptions(), True)
    with pytest.raises(
        TypeError, match="record 0: `response_token_ids` should be a list of integer token ids"
    ):
        encode_records(
            model, tok, [{"prompt": "a", "response": "x", "response_token_ids": 7}], ScoringOptions(), True
        )


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err.strip()


def test_batch_size_auto_is_accepted_on_the_command_line(model_dir, capsys):
    _write(model_dir / "in.jsonl", [{"prompt": "Hi", "response": "there"}] * 3)
    assert main(_score_args(model_dir, "base", "--no-adapter", "--batch-size", "auto")) == 0
    assert len((model_dir / "out.jsonl").read_text().splitlines()) == 3
    capsys.readouterr()
    assert main(_score_args(model_dir, "base", "--batch-size", "most")) == 2
    assert "`batch_size` should be a positive integer or 'auto', got 'most'" in _error_line(capsys)


def test_cuda_on_a_machine_without_it_is_one_line_before_the_model_loads(
    model_dir, no_model_loading, monkeypatch, capsys
):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    _write(model_dir / "in.jsonl", [{"prompt": "Hi", "response": "there"}])
    assert main(_score_args(model_dir, "base", "--device", "cuda")) == 2
    assert "--device 'cuda': this machine has no CUDA" in _error_line(capsys)
    assert main(_score_args(model_dir, "base", "--device", "gpu")) == 2
    assert "--device 'gpu' is not a torch device; give cpu, cuda" in _error_line(capsys)


def test_a_record_without_a_response_is_named_by_file_and_line_before_the_model_loads(
    model_dir, no_model_loading, capsys
):
    (model_dir / "in.jsonl").write_text('{"prompt": "Hi", "response": "x"}\n\n{"prompt": "Bye"}\n')
    assert main(_score_args(model_dir)) == 2
    line = _error_line(capsys)
    assert "in.jsonl, line 3: has `prompt` but no `response` to score (or pass --generate" in line


def test_abstain_below_without_generate_is_refused(model_dir, no_model_loading, capsys):
    _write(model_dir / "in.jsonl", [{"prompt": "Hi", "response": "there"}])
    assert main(_score_args(model_dir, "base", "--abstain-below", "0.5")) == 2
    assert "--abstain-below stops a response while it is generated; it needs --generate" in _error_line(
        capsys
    )


def test_output_equal_to_input_is_refused_and_the_input_kept(
    model_dir, no_model_loading, capsys, monkeypatch
):
    _write(model_dir / "in.jsonl", [{"prompt": "Hi", "response": "there"}])
    before = (model_dir / "in.jsonl").read_text()
    args = _score_args(model_dir)
    args[args.index("--output") + 1] = str(model_dir / "in.jsonl")
    assert main(args) == 2
    assert "is the --input file: it would be replaced" in _error_line(capsys)
    monkeypatch.chdir(model_dir)  # the same file by another name
    args[args.index("--output") + 1] = "./in.jsonl"
    assert main(args) == 2
    assert "is the --input file" in _error_line(capsys)
    assert (model_dir / "in.jsonl").read_text() == before


def test_an_output_under_a_file_is_refused_before_the_model_loads(model_dir, no_model_loading, capsys):
    _write(model_dir / "in.jsonl", [{"prompt": "Hi", "response": "there"}])
    args = _score_args(model_dir)
    args[args.index("--output") + 1] = str(model_dir / "in.jsonl" / "out.jsonl")
    assert main(args) == 2
    assert "out.jsonl': cannot be written there" in _error_line(capsys)
    args[args.index("--output") + 1] = str(model_dir)
    assert main(args) == 2
    assert "is a directory; give a file name" in _error_line(capsys)


def test_non_finite_scores_name_the_record_and_the_cause(model_dir, monkeypatch, capsys):
    """Whatever made the model's scores non-finite, the refusal names the input line and the
    field, not JSON's 'Out of range float values', and the old output stays."""
    from sighead_eval import scoring

    class Poisoned:
        def __init__(self, value):
            self.value = value

        def to_dict(self):
            return {"tokens": [], "words": [], "sequence": {"sigmoid_mean": self.value}}

    monkeypatch.setattr(
        scoring, "score", lambda model, tok, records, options: [Poisoned(0.5), Poisoned(math.nan)]
    )
    (model_dir / "in.jsonl").write_text(
        '{"prompt": "a", "response": "b"}\n\n{"prompt": "c", "response": "d"}\n'
    )
    (model_dir / "out.jsonl").write_text("previous results\n")
    assert main(_score_args(model_dir, "base", "--no-adapter")) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]  # after the model's loading bar
    assert "in.jsonl, line 3: its scores hold a non-finite number (`sequence.sigmoid_mean`)" in line
    assert "Out of range" not in line
    assert (model_dir / "out.jsonl").read_text() == "previous results\n"
