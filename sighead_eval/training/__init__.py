"""Training the Sigmoid Head: data shapes and masking, negative sampling, the loss, the trainer."""

from .data import Example, detect_shape, encode_examples, load_records, split_dev
from .loss import full_vocab_loss, sigmoid_head_loss
from .negatives import excluded_tokens, sample_negatives, unigram_distribution
from .trainer import TrainConfig, Trainer, TrainingError, TrainingInterrupted, train

__all__ = [
    "Example",
    "TrainConfig",
    "Trainer",
    "TrainingError",
    "TrainingInterrupted",
    "detect_shape",
    "encode_examples",
    "excluded_tokens",
    "full_vocab_loss",
    "load_records",
    "sample_negatives",
    "sigmoid_head_loss",
    "split_dev",
    "train",
    "unigram_distribution",
]
