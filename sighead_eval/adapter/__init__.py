from ._peft_compat import PREFIX, SIGMOID_HEAD, register
from .config import SigmoidHeadConfig
from .layer import SigmoidHeadLayer
from .model import SigmoidHeadModel, find_head_module, sigmoid_head_layers

register(SigmoidHeadConfig, SigmoidHeadModel)

__all__ = [
    "PREFIX",
    "SIGMOID_HEAD",
    "SigmoidHeadConfig",
    "SigmoidHeadLayer",
    "SigmoidHeadModel",
    "find_head_module",
    "sigmoid_head_layers",
]
