"""Confidence for lm-eval's `loglikelihood` requests from HFLM's own model pass.

HFLM's `_loglikelihood_tokens` sorts and batches the requests, calls the model once per batch
(`_model_call`), cuts each row's continuation out of the log-softmax (`_select_cont_toks`) and
reports each answer to the cache hook. `LoglikelihoodPass` rides along on those three points and
changes none of them: it keeps the batch's raw logits and the head's inputs (a pre-hook on the
output layer), notes each row's end as HFLM selects it, and, as HFLM answers a request, which row
and which positions hold its tokens. Before the next batch runs (and once at the end) the noted
positions are scored together: one `token_scores` call per batch, no second forward pass.

Which tokens are scored: HFLM's own continuation tokens (a context's trailing whitespace is
moved into the continuation, and the pair is tokenised together), minus the leading tokens that
lie wholly inside that moved whitespace (the newline that closes a chat template's assistant
tag, say). A continuation made only of such tokens keeps them all. So the softmax estimator's
product is HFLM's log-likelihood wherever nothing was moved (to the precision of HFLM's
log-softmax, which runs in the model's dtype unless `softmax_dtype` is set).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..frozen import HeadInputs
from ..scoring import Encoded, ScoringOptions, active_head_layer, build_result, scores_to_host, token_scores


@dataclass(frozen=True)
class Tagged:
    """A request's `(context, continuation)` with its index, where HFLM carries the request string
    (to its cache hook): the answer HFLM reports can be matched to the request it belongs to."""

    index: int
    args: tuple[str, str]


def moved_whitespace(context: str) -> str:
    """The trailing whitespace HFLM moves from a context into its continuation."""
    return context[len(context.rstrip()) :]


def whitespace_tokens(tokenizer, tokens: list[int], moved: str) -> int:
    """How many leading `tokens` lie wholly inside the whitespace `moved` (never all of them)."""
    if not moved:
        return 0
    drop = 0
    while drop + 1 < len(tokens):
        text = tokenizer.decode(tokens[: drop + 1])
        if len(text) > len(moved) or not moved.startswith(text):
            break
        drop += 1
    return drop


class LoglikelihoodPass:
    """Scores every request of one `_loglikelihood_tokens` call from HFLM's own batches.

    `requests`: HFLM's `(request string, context tokens, continuation tokens)`, the request strings
    replaced by `Tagged`. After the call, `results[i]` is request `i`'s `ScoredText`.
    """

    def __init__(self, lm, requests: list, options: ScoringOptions):
        self.lm = lm
        self.requests = requests
        self.options = options
        self.head = active_head_layer(lm.model)
        self.results: list = [None] * len(requests)
        self._logits: torch.Tensor | None = None  # (B, L, V) the batch's raw logits
        self._hidden: torch.Tensor | None = None  # (B, L, H) the output layer's inputs
        self._ends: list[int] = []  # each selected row's end (HFLM's `inplen`), in row order
        self._pending: list[tuple[int, int, int]] = []  # (request index, row, end) of this batch

    def model_call(self, call, inps: torch.Tensor, **kwargs) -> torch.Tensor:
        """HFLM's `_model_call`, keeping the logits and head inputs of the batch."""
        self.flush()
        self._logits = self._hidden = None  # the last batch's, freed before this one runs
        with HeadInputs(self.lm.model) as capture:
            logits = call(inps, **kwargs)
        self._logits, self._ends = logits, []
        self._hidden = capture.captured[-1] if capture.captured else None
        return logits

    def selected(self, inplen: int) -> None:
        """HFLM selected the next row's continuation, which ends at `inplen`."""
        self._ends.append(inplen)

    def answered(self, tag: Tagged) -> None:
        """HFLM answered request `tag.index` from the row it selected last."""
        self._pending.append((tag.index, len(self._ends) - 1, self._ends[-1]))

    @torch.no_grad()
    def flush(self) -> None:
        """Scores the answered requests of the current batch, all at once."""
        if not self._pending:
            return
        rows, positions, targets, spans = [], [], [], []
        for index, row, end in self._pending:
            tag, _, cont = self.requests[index]
            drop = whitespace_tokens(self.lm.tokenizer, list(cont), moved_whitespace(tag.args[0]))
            scored = list(cont[drop:])
            # position p predicts token p + 1: the continuation's last token is predicted at end - 1
            first = end - len(scored)
            rows += [row] * len(scored)
            positions += range(first, end)
            targets += scored
            spans.append((index, scored))
        device = self._logits.device
        rows_t = torch.tensor(rows, device=device)
        pos_t = torch.tensor(positions, device=device)
        hidden = None
        if self.head is not None:
            hidden = self._hidden[rows_t.to(self._hidden.device), pos_t.to(self._hidden.device)]
        scores = token_scores(
            self._logits[rows_t, pos_t],
            torch.tensor(targets, device=device),
            hidden,
            self.head,
            self.options,
        )
        host = scores_to_host(scores)
        offset = 0
        for index, scored in spans:
            tag, ctx, cont = self.requests[index]
            item = Encoded(index, {}, list(ctx), scored, response=tag.args[1])
            item.dropped = max(0, len(ctx) + len(cont) - (self.lm.max_length + 1))
            self.results[index] = build_result(
                item, self.lm.tokenizer, scored, host, slice(offset, offset + len(scored))
            )
            offset += len(scored)
        self._pending = []

    def close(self) -> None:
        """Scores what is left and lets the batch's tensors go."""
        self.flush()
        self._logits = self._hidden = None


class AnswerHook:
    """lm-eval's cache hook as HFLM sees it during a scored `_loglikelihood_tokens`: each answer
    tells `LoglikelihoodPass` which request it was; the scored answer reaches the real hook later,
    from `SigheadLM.loglikelihood`."""

    def __init__(self, scoring: LoglikelihoodPass | None):
        self.scoring = scoring

    def add_partial(self, attr, req, res):
        if self.scoring is not None and attr == "loglikelihood" and isinstance(req, Tagged):
            self.scoring.answered(req)
