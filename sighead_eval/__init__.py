"""sighead-eval: token-level confidence from a Sigmoid Head, and whether it is worth trusting.

Importing the package registers the SIGMOID_HEAD adapter type with PEFT, so that
`get_peft_model`, `PeftModel.from_pretrained`, `AutoPeftModelForCausalLM` and transformers'
`load_adapter` know it.
"""

from __future__ import annotations

from .adapter import SigmoidHeadConfig, SigmoidHeadLayer, SigmoidHeadModel

__version__ = "0.1.0"

_LAZY = {
    "score": "scoring",
    "generate": "scoring",
    "ScoredText": "scoring",
    "ScoringOptions": "scoring",
    "dominant_tokens": "dominant",
    "load_model": "models",
    "load_adapter": "adapter.io",
    "default_model_dir": "models",
    "metric_path": "hf_metrics",
}


def __getattr__(name: str):
    # Scoring and model loading pull in transformers; keep `import sighead_eval` light beyond PEFT.
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module 'sighead_eval' has no attribute {name!r}")


__all__ = ["SigmoidHeadConfig", "SigmoidHeadLayer", "SigmoidHeadModel", "__version__", *_LAZY]
