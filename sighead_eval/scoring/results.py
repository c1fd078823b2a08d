"""What scoring gives back: `ScoredText` (one response's token, word and sequence scores), and
the two steps that make one from a batch (`scores_to_host`, `build_result`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..estimators import SEQUENCE_AGGREGATIONS, TOKEN_ESTIMATORS, aggregate_rows
from ..pieces import token_pieces
from .tokens import TOKEN_STATS

if TYPE_CHECKING:
    from .inputs import Encoded


def word_spans(pieces: Sequence[str]) -> list[tuple[int, int]]:
    """Groups sub-word pieces into words: a word starts at a piece that begins with whitespace or
    follows one that ends with it. Returns `[start, end)` index pairs."""
    spans: list[tuple[int, int]] = []
    for i, piece in enumerate(pieces):
        starts = i == 0 or (piece[:1].isspace()) or (pieces[i - 1][-1:].isspace()) or not pieces[i - 1]
        if starts:
            spans.append((i, i + 1))
        else:
            spans[-1] = (spans[-1][0], i + 1)
    return spans


@dataclass
class ScoredText:
    """One scored response. Probabilities are kept as natural logs; `to_dict` gives probabilities."""

    record: dict[str, Any]
    response: str
    token_ids: list[int]
    log_scores: dict[str, np.ndarray]  # token estimator -> (R,) log prob
    entropy: np.ndarray  # (R,)
    dominant_size: np.ndarray  # (R,)
    dominant_mass: np.ndarray  # (R,)
    greedy: np.ndarray | None = None  # (R,) 1.0 where the token is the argmax
    empty_response: bool = False
    finished: bool = True  # False when generation stopped at max_new_tokens
    abstained: bool | None = None  # with `abstain_below`: whether the confidence fell below it
    abstained_at: int | None = None  # ... and at which generated token
    prompt_tokens_dropped: int = 0
    tokenizer: Any = field(default=None, repr=False, compare=False)  # decodes `tokens` when read
    _tokens: list[str] | None = field(default=None, repr=False, compare=False)

    @property
    def tokens(self) -> list[str]:
        """Each scored token's text (`tokenizer.decode([t])`), decoded on first use."""
        if self._tokens is None:
            if self.tokenizer is None:
                raise ValueError("this ScoredText has no tokenizer to decode its tokens with")
            self._tokens = token_pieces(self.tokenizer, self.token_ids)
        return self._tokens

    def __getstate__(self) -> dict:  # pickles without the tokenizer, its token texts decoded
        state = {f.name: getattr(self, f.name) for f in fields(self)}
        state["_tokens"], state["tokenizer"] = (
            self.tokens if self.tokenizer is not None else self._tokens,
            None,
        )
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    @property
    def estimators(self) -> list[str]:
        return [e for e in TOKEN_ESTIMATORS if e in self.log_scores]

    def words(self) -> tuple[list[str], dict[str, list[float]]]:
        """Words and their probability per estimator (product of the pieces' probabilities)."""
        spans = word_spans(self.tokens)
        text = ["".join(self.tokens[a:b]) for a, b in spans]
        scores = {
            e: [float(np.exp(self.log_scores[e][a:b].sum())) for a, b in spans] for e in self.estimators
        }
        return text, scores

    def sequence_scores(self) -> dict[str, float]:
        """`{estimator}_{aggregation}` for every probability estimator; `entropy_mean`, `entropy_max`."""
        names = self.estimators
        rows = aggregate_rows(np.stack([self.log_scores[e] for e in names])) if names else {}
        out = {f"{e}_{agg}": rows[agg][i] for i, e in enumerate(names) for agg in SEQUENCE_AGGREGATIONS}
        out["entropy_mean"] = float(self.entropy.mean())
        out["entropy_max"] = float(self.entropy.max())
        return out

    def summary(self, digits: int = 6) -> dict[str, Any]:
        """A compact record of this response: sequence scores, token count and per-token scores
        (rounded); what the lm-eval model attaches to each output."""
        tokens = {"text": self.tokens, "id": list(self.token_ids)}
        names = self.estimators
        if names:  # every estimator's list in one exp, one round and one `tolist`
            lists = np.exp(np.stack([self.log_scores[e] for e in names])).round(digits).tolist()
            tokens.update(zip(names, lists))
        tokens["entropy"] = self.entropy.round(digits).tolist()
        return {
            "response": self.response,
            "sequence": self.sequence_scores(),
            "n_tokens": len(self.token_ids),
            "empty_response": self.empty_response,
            **self._abstention(),
            "tokens": tokens,
        }

    def _abstention(self) -> dict[str, Any]:
        if self.abstained is None:
            return {}
        return {"abstained": self.abstained, "abstained_at": self.abstained_at}

    def to_dict(self) -> dict[str, Any]:
        words, word_scores = self.words()
        tokens = {"text": self.tokens, "id": self.token_ids}
        tokens.update({e: np.exp(self.log_scores[e]).tolist() for e in self.estimators})
        tokens["entropy"] = self.entropy.tolist()
        tokens["dominant_size"] = self.dominant_size.astype(int).tolist()
        tokens["dominant_mass"] = self.dominant_mass.tolist()
        return {
            **self.record,
            "response": self.response,
            "n_tokens": len(self.token_ids),
            "empty_response": self.empty_response,
            "finished": self.finished,
            "prompt_tokens_dropped": self.prompt_tokens_dropped,
            **self._abstention(),
            "sequence": self.sequence_scores(),
            "words": {"text": words, **word_scores},
            "tokens": tokens,
        }


_TOKEN_STATS = ("entropy", "dominant_size", "dominant_mass", "greedy")


def scores_to_host(scores: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """A batch's (N,) score tensors as float64 numpy arrays, in one device-to-host copy: every
    estimator is stacked into one (E, N) tensor first, so the copy count does not grow with the
    number of outputs or estimators."""
    keys = [k for k in (*TOKEN_ESTIMATORS, *TOKEN_STATS) if k in scores]
    stacked = torch.stack([scores[k].detach().to(torch.float64) for k in keys]).cpu().numpy()  # (E, N)
    return dict(zip(keys, stacked))


def build_result(
    item: Encoded,
    tokenizer,
    targets: list[int],
    host: Mapping[str, np.ndarray],
    rows: slice,
    response: str | None = None,
    finished: bool = True,
) -> ScoredText:
    """One output's `ScoredText` from its batch's host scores (`scores_to_host`): views of `rows`,
    no copy; its token texts are decoded only when read."""
    return ScoredText(
        record=item.record,
        response=_response_text(item) if response is None else response,
        token_ids=list(targets),
        log_scores={e: host[e][rows] for e in TOKEN_ESTIMATORS if e in host},
        entropy=host["entropy"][rows],
        dominant_size=host["dominant_size"][rows],
        dominant_mass=host["dominant_mass"][rows],
        greedy=host["greedy"][rows] if "greedy" in host else None,
        empty_response=item.empty_response,
        finished=finished,
        prompt_tokens_dropped=item.dropped,
        tokenizer=tokenizer,
    )


def _response_text(item: Encoded) -> str:
    return "" if item.response is None else str(item.response)
