"""`sighead-eval rescore`: a run written by another backend (lm-eval's own HFLM, with
`--log_samples`) gets every estimator attached in one batched pass, equal to the scoring engine's
on the same context and kept text."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

TASKS = {
    "tiny_gen": """task: tiny_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {docs}
test_split: test
output_type: generate_until
doc_to_text: "Q: {{{{question}}}}\\nA:"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 6
  do_sample: false
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
""",
    "tiny_mc": """task: tiny_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {docs}
test_split: test
output_type: multiple_choice
doc_to_text: "Q: {{{{question}}}}\\nA:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{label}}}}"
metric_list:
  - metric: acc
""",
}
DOCS = [
    {"question": q, "answer": a, "choices": ["Paris", "Rome", "water"], "label": i % 3}
    for i, (q, a) in enumerate(
        [("Capital of France?", "Paris"), ("Capital of Italy?", "Rome"), ("What is wet?", "water")]
    )
]


@pytest.fixture(scope="module")
def hflm_run(tiny_dir, tmp_path_factory):
    """Both tasks run by stock lm-eval (`--model hf`) with `--log_samples`: its samples files."""
    root = tmp_path_factory.mktemp("hflm_run")
    (root / "docs.jsonl").write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    tasks = root / "tasks"
    tasks.mkdir()
    for name, text in TASKS.items():
        (tasks / f"{name}.yaml").write_text(text.format(docs=root / "docs.jsonl"))
    command = [
        sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args",
        f"pretrained={tiny_dir / 'base'},dtype=float32", "--tasks", "tiny_gen,tiny_mc", "--include_path",
        str(tasks), "--device", "cpu", "--batch_size", "2", "--output_path", str(root / "out"),
        "--log_samples",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return {name: next((root / "out").rglob(f"samples_{name}_*.jsonl")) for name in TASKS}


def test_rescore_attaches_the_engines_scores_to_a_stock_run(hflm_run, tiny_dir, tmp_path, capsys):
    from transformers import AutoTokenizer

    from sighead_eval.cli import main
    from sighead_eval.models import load_model
    from sighead_eval.scoring import ScoringOptions, score

    out = tmp_path / "scored.jsonl"
    argv = ["rescore", "--samples", str(hflm_run["tiny_gen"]), "--output", str(out), "--model",
            str(tiny_dir / "base"), "--adapter", str(tiny_dir / "head"),
            "--quality", "exact_match"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| sigmoid_mean |" in printed and "exact_match" in printed
    samples = [json.loads(line) for line in out.read_text().splitlines()]
    original = [json.loads(line) for line in hflm_run["tiny_gen"].read_text().splitlines()]
    assert len(samples) == len(original) == len(DOCS)
    model, _ = load_model(str(tiny_dir / "base"), adapter=tiny_dir / "head")
    tok = AutoTokenizer.from_pretrained(tiny_dir / "base")
    for sample, before in zip(samples, original):
        assert {k: v for k, v in sample.items() if k != "sighead"} == before  # the run's own fields kept
        context, text = sample["arguments"]["gen_args_0"]["arg_0"], sample["resps"][0][0]
        record = {"prompt_token_ids": tok(context, add_special_tokens=False)["input_ids"], "response": text}
        [direct] = score(model, tok, [record], ScoringOptions(chat_template=False), progress=False)
        assert sample["sighead"]["response"] == text
        for name, value in direct.sequence_scores().items():
            assert sample["sighead"]["sequence"][name] == pytest.approx(value, rel=1e-5, abs=1e-7), name


def test_rescore_scores_each_continuation_of_a_multiple_choice_run(hflm_run, tiny_dir, tmp_path):
    """Log-likelihood requests: one summary per continuation; its softmax product is HFLM's
    log-likelihood where the continuation tokenises alone as it does after the context."""
    import math

    from sighead_eval.cli import main

    out = tmp_path / "mc.jsonl"
    argv = ["rescore", "--samples", str(hflm_run["tiny_mc"]), "--output", str(out), "--model",
            str(tiny_dir / "base"), "--adapter", str(tiny_dir / "head")]  # fmt: skip
    assert main(argv) == 0
    for sample in map(json.loads, out.read_text().splitlines()):
        # lm-eval's continuation: the target delimiter (a space) and the choice
        assert [s["response"] for s in sample["sighead"]] == [f" {c}" for c in DOCS[0]["choices"]]
        logged = [r[0][0] for r in sample["resps"]]  # HFLM's log-likelihoods
        ours = [math.log(s["sequence"]["softmax_prod"]) for s in sample["sighead"]]
        assert len(ours) == len(logged) == 3 and all(math.isfinite(v) for v in ours)


def test_rescore_refuses_what_is_not_a_samples_file_before_loading_a_model(tmp_path, capsys):
    from sighead_eval.cli import main

    bad = tmp_path / "results.jsonl"
    bad.write_text('{"results": {}}\n')
    argv = [
        "rescore",
        "--samples",
        str(bad),
        "--output",
        str(tmp_path / "o.jsonl"),
        "--model",
        "/nonexistent",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "line 1: not an lm-eval sample" in err[0]
    assert main(["rescore", "--samples", str(bad), "--output", str(bad)]) == 2
    assert "is the --samples file" in capsys.readouterr().err
    rolling = tmp_path / "rolling.jsonl"  # a perplexity task's sample: nothing to score
    rolling.write_text(
        json.dumps(
            {
                "doc_id": 0,
                "arguments": {"gen_args_0": {"arg_0": "text"}},
                "resps": [["-12.5"]],
                "filtered_resps": ["-12.5"],
            }
        )
        + "\n"
    )
    argv = [
        "rescore",
        "--samples",
        str(rolling),
        "--output",
        str(tmp_path / "o.jsonl"),
        "--model",
        "/nonexistent",
    ]
    assert main(argv) == 2
    assert "rolling log-likelihoods" in capsys.readouterr().err
