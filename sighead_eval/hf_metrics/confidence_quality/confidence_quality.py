"""How well confidences predict quality: correlations, detection, calibration and selective generation."""

import datasets
import evaluate

from sighead_eval import metrics as core
from sighead_eval.hf_metrics import SIGMOID_HEAD_CITATION
from sighead_eval.spans import token_quality_metrics

_DESCRIPTION = """
Measures whether a confidence score is worth trusting. `predictions` are confidences (higher =
more sure), `references` the outputs' quality: graded human scores (e.g. MT direct assessment),
or 1/0 for correct/wrong (hallucination, answer correctness, paraphrase labels).

For graded references: Pearson, Spearman, Kendall and the prediction-rejection ratio (PRR, also
up to 50 % rejection). For binary references: ROC-AUC, average precision, PRR, the area under the
risk-coverage curve (AURC), and when the confidences are probabilities, Brier score, expected
calibration error (20 bins) and BCE. Same code as sighead-eval's lm-eval tasks: results agree
exactly.

Token level (word-level QE): give one list of per-token confidences per output as `predictions`
and one list of per-token quality (1 OK, 0 BAD) as `references`. Returned: ROC-AUC and AP of
finding OK tokens, AP of finding BAD ones, and the WMT word-level QE metrics F1-BAD, F1-OK,
F1-MULT and MCC at `threshold` (a token is BAD below it; chosen on these tokens by MCC when not
given, which is optimistic: choose it on dev and pass it for test).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `float`): confidence per output, higher = more confident.
    references (`list` of `float`): quality per output; 0/1 for binary quality.
    kind (`str`, optional): 'auto' (default: binary when every reference is 0 or 1), 'graded' or 'binary'.
    metrics (`list` of `str`, optional): compute only these, from pearson, spearman, kendall,
        auroc, ap, prr, prr_50, aurc, brier, ece, bce (the names of `sighead_eval.estimators`).
    threshold (`float`, optional): token level only: the confidence below which a token is BAD.
Returns:
    A dict of plain floats, one per metric.
Examples:
    >>> import evaluate, sighead_eval
    >>> metric = evaluate.load(sighead_eval.metric_path("confidence_quality"))
    >>> out = metric.compute(predictions=[0.9, 0.8, 0.3, 0.1], references=[1, 1, 0, 1])
    >>> round(out["auroc"], 3), round(out["brier"], 4), round(out["prr"], 3)
    (0.667, 0.2375, 0.556)
    >>> out = metric.compute(predictions=[0.2, 0.4, 0.6, 0.8], references=[10.0, 30.0, 20.0, 40.0])
    >>> round(out["pearson"], 3), round(out["spearman"], 3), round(out["prr"], 3)
    (0.8, 0.8, 0.833)
    >>> tokens = [[0.9, 0.2, 0.8], [0.7, 0.1]]
    >>> out = metric.compute(predictions=tokens, references=[[1, 0, 1], [1, 0]], threshold=0.5)
    >>> out["auroc"], out["f1_bad"], out["mcc"]
    (1.0, 1.0, 1.0)
"""

_CITATION = (
    SIGMOID_HEAD_CITATION
    + """@article{malinin2021uncertainty,
  title={Uncertainty Estimation in Autoregressive Structured Prediction},
  author={Malinin, Andrey and Gales, Mark},
  journal={International Conference on Learning Representations},
  year={2021}
}
"""
)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class ConfidenceQuality(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features(
                    {"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}
                ),
                datasets.Features(  # token level: a list per output
                    {
                        "predictions": datasets.Sequence(datasets.Value("float64")),
                        "references": datasets.Sequence(datasets.Value("float64")),
                    }
                ),
            ],
            reference_urls=["https://arxiv.org/abs/2601.00680"],
        )

    def _compute(self, predictions, references, kind="auto", metrics=None, threshold=None):
        if len(predictions) and isinstance(predictions[0], (list, tuple)):
            return token_quality_metrics(predictions, references, threshold=threshold)
        return core.quality_metrics(predictions, references, kind=kind, metrics=metrics)
