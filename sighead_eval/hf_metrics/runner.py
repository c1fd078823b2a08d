"""What the `sigmoid_confidence` evaluate module runs; kept in the package, the module is a shim."""

from __future__ import annotations

from collections.abc import Sequence


def sequence_confidences(
    cache: dict,
    predictions: Sequence[str],
    sources,
    model: str | None,
    adapter: str | None,
    batch_size: int,
    chat_template: bool | None,
    return_tokens: bool,
) -> dict:
    from ..adapter.io import check_adapter_dir
    from ..models import load_model
    from ..scoring import ScoringOptions, score

    if not predictions:
        raise ValueError("`predictions` is empty; give at least one text to score")
    if sources is None:
        sources = [""] * len(predictions)
    if isinstance(sources, str) or len(sources) != len(predictions):
        raise ValueError(
            f"`sources` should be a list with one prompt per prediction: got {len(sources)} sources "
            f"for {len(predictions)} predictions"
        )
    if adapter is not None:
        check_adapter_dir(adapter)
    else:
        import warnings

        warnings.warn(
            "sigmoid_confidence: no `adapter` given, so there are no Sigmoid Head scores (`sigmoid_*`); "
            "only the softmax baselines are computed. Pass adapter=DIR (e.g. the shipped "
            "adapters/smollm2-135m-instruct-wiki) for the head's scores.",
            UserWarning,
            stacklevel=3,
        )
    key = (model, None if adapter is None else str(adapter))
    if key not in cache:  # one model load per metric instance and (model, adapter)
        cache[key] = load_model(model, adapter=adapter)
    lm, tokenizer = cache[key]
    records = []
    for text, source in zip(predictions, sources):
        if isinstance(source, list):
            records.append({"messages": [*source, {"role": "assistant", "content": text}]})
        else:
            records.append({"prompt": str(source), "response": text})
    results = score(
        lm, tokenizer, records, ScoringOptions(batch_size=batch_size, chat_template=chat_template)
    )
    per_text = [r.sequence_scores() for r in results]
    scores = {name: [s[name] for s in per_text] for name in per_text[0]}
    out = {"scores": scores, "means": {name: sum(v) / len(v) for name, v in scores.items()}}
    if return_tokens:
        out["tokens"] = [r.to_dict()["tokens"] for r in results]
    return out
