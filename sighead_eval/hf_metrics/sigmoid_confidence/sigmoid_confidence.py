"""Per-text confidence from a Sigmoid Head and its baselines, computed by running a model."""

import datasets
import evaluate

from sighead_eval.hf_metrics import SIGMOID_HEAD_CITATION

_DESCRIPTION = """
Runs a causal language model with a Sigmoid Head adapter over texts and returns, for every text,
its sequence confidence under each token estimator of the registry (`sighead_eval.estimators`:
the Sigmoid Head `sigmoid_*`, softmax probability `softmax_*`, BoostedProb `boostedprob_*`, the
head's closed-form ceiling `ceiling_*`, the head times its ceiling `hybrid_*`, the authors'
weighted BoostedProb `weighted_boostedprob_*`, ...) and mean token entropy (`entropy_mean`), with
the aggregations mean, prod, sumlog, meanlog and min. `sources` (prompts or chat messages) are the
context the texts answer; they are never scored. The model loads once per metric instance.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str`): the texts (responses) to score.
    sources (`list` of `str` or of chat message lists, optional): the prompt each text answers.
    model (`str`, optional): hub id or local path; default the embedded SmolLM2-135M-Instruct.
    adapter (`str`, optional): a Sigmoid Head adapter directory; without one only the softmax
        baselines are computed.
    batch_size (`int`, optional): texts per forward pass, default 8.
    chat_template (`bool`, optional): wrap sources in the chat template (default: when the tokenizer has one).
    return_tokens (`bool`, optional): also return per-token scores, default False.
Returns:
    `scores`: estimator_aggregation -> list of floats (one per text); `means`: their means;
    `tokens` (with `return_tokens`): per-text token strings and per-token scores.
Examples:
    >>> import evaluate, sighead_eval
    >>> metric = evaluate.load(sighead_eval.metric_path("sigmoid_confidence"))
    >>> out = metric.compute(
    ...     predictions=["The capital of France is Paris.", "The capital of France is Madrid."],
    ...     sources=["What is the capital of France?"] * 2,
    ... )
    >>> out["scores"]["softmax_prod"][0] > out["scores"]["softmax_prod"][1]
    True
    >>> sorted(k for k in out["means"] if k.startswith("softmax_"))
    ['softmax_mean', 'softmax_meanlog', 'softmax_min', 'softmax_prod', 'softmax_sumlog']
"""

_CITATION = (
    SIGMOID_HEAD_CITATION
    + """@inproceedings{dinh2025boostedprob,
  title={Are Generative Models Underconfident? Better Quality Estimation with Boosted Model Probability},
  author={Dinh, Tu Anh and Niehues, Jan},
  booktitle={Proceedings of EMNLP},
  year={2025}
}
"""
)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class SigmoidConfidence(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("string")}),
            reference_urls=["https://arxiv.org/abs/2601.00680"],
        )

    def _compute(
        self,
        predictions,
        sources=None,
        model=None,
        adapter=None,
        batch_size=8,
        chat_template=None,
        return_tokens=False,
    ):
        from sighead_eval.hf_metrics.runner import sequence_confidences

        cache = self.__dict__.setdefault("_sighead_models", {})
        return sequence_confidences(
            cache, predictions, sources, model, adapter, batch_size, chat_template, return_tokens
        )
