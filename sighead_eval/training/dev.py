"""The dev set of a training run: its positions computed once (head inputs, references, fixed
negatives, the LM's log-sum-exp), kept in the cache directory when there is one, and the dev
figures that early stopping reads."""

from __future__ import annotations

from pathlib import Path

import torch

from ..files import atomic_path
from .data import Example, error_flags
from .loss import ranking_loss, sigmoid_head_loss
from .negatives import _generator, dominant_pairs, dominant_sets, draw_negatives, pad_pairs

DEV_SEED_PART = 99991  # the dev set's negatives come from their own seeded stream


class DevSet:
    """Dev positions computed once: head inputs, references, fixed negatives and the LM's
    log-sum-exp (the 'log_softmax' offset's term). With a cache directory they are kept there
    (`dev.safetensors`) and read back by later runs. With error spans, which positions are errors
    (`errors`): the dev loss is then the training objective's (`sigmoid_head_loss`), and
    `dev_error_auroc` says how well the head's confidence in the reference separates correct
    tokens from errors. With the ranking loss, each position's dominant tokens other than the
    reference (`dominant`, `dominant_valid`): `dev_ranking` is the ranking loss on dev, and
    `dev_loss` the whole objective (`dev_bce` + weight x `dev_ranking`), which early stopping then
    reads, as the authors' trainer reads its eval loss."""

    FIELDS = ("hidden", "targets", "negatives", "valid", "log_normalizers")

    def __init__(self, trainer, examples: list[Example]):
        """`trainer`: the `Trainer` whose model, head layer, config and unigram the positions come from."""
        self.layer = trainer.layer
        self.error_weight = trainer.config.error_span_weight
        self.errors = None  # (N,) bool, or None without error spans
        self.dominant = self.dominant_valid = None  # (N, D): the ranking loss's pairs, or None
        self.ranking_weight = trainer.config.ranking_loss_weight
        self.margin = trainer.config.ranking_loss_margin
        path = Path(trainer.config.cache_dir) / "dev.safetensors" if trainer.config.cache_dir else None
        if path is not None and path.exists():
            from safetensors.torch import load_file

            saved = load_file(str(path), device=str(trainer.device))
            for name in self.FIELDS:
                setattr(self, name, saved[name])
            self.errors = saved.get("errors")
            self.dominant, self.dominant_valid = saved.get("dominant"), saved.get("dominant_valid")
            return
        self._compute(trainer, examples)
        if path is not None and trainer.rank == 0:
            from safetensors.torch import save_file

            optional = ("errors", "dominant", "dominant_valid")
            names = self.FIELDS + tuple(n for n in optional if getattr(self, n) is not None)
            with atomic_path(path) as tmp:
                save_file({name: getattr(self, name).contiguous().cpu() for name in names}, str(tmp))

    @torch.no_grad()
    def _compute(self, trainer, examples: list[Example]) -> None:
        config = trainer.config
        hidden, targets, negatives, valid, lse, errors, dom, domok = [], [], [], [], [], [], [], []
        for i in range(0, len(examples), config.batch_size):
            batch = examples[i : i + config.batch_size]
            frozen = trainer.frozen(batch)
            flags = error_flags(batch, frozen.targets.device)
            errors.append(flags if flags is not None else torch.zeros_like(frozen.targets, dtype=torch.bool))
            # Always the paper's negatives, whatever the training mode: dev BCE stays comparable.
            generator = _generator(config.seed, DEV_SEED_PART, i, device=frozen.logits.device)
            sets = dominant_sets(frozen, config)
            neg, ok = draw_negatives(frozen, config, trainer.unigram, generator, "dominant", sets=sets)
            if config.ranking:
                pairs = dominant_pairs(sets, frozen.targets)
                dom.append(pairs[0])
                domok.append(pairs[1])
            hidden.append(frozen.hidden.float())
            lse.append(torch.logsumexp(frozen.logits.float(), -1))
            targets.append(frozen.targets)
            negatives.append(neg)
            valid.append(ok)
        self.hidden = torch.cat(hidden)  # (N, H)
        self.targets = torch.cat(targets)  # (N,)
        self.negatives = torch.cat(negatives)  # (N, K)
        self.valid = torch.cat(valid)  # (N, K)
        self.log_normalizers = torch.cat(lse)  # (N,)
        if config.error_spans:
            self.errors = torch.cat(errors)
        if config.ranking:
            self.dominant, self.dominant_valid = pad_pairs(dom), pad_pairs(domok)

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Dev BCE on the paper's sampled pairs, and ROC-AUC of references against negatives (and,
        with error spans, of correct references against the errors)."""
        from ..metrics import auroc

        losses, weights, pos, neg, bad = [], [], [], [], []
        ranked, pairs = 0.0, 0
        for i in range(0, self.hidden.shape[0], 4096):
            s = slice(i, i + 4096)
            ids = torch.cat([self.targets[s].unsqueeze(1), self.negatives[s]], dim=1)  # (n, 1+K)
            offset = self.layer.logit_offset(log_normalizer=self.log_normalizers[s])
            logits = self.layer.head_logits(self.hidden[s], ids, offset=offset)
            err = self.errors[s] if self.errors is not None else None
            if self.dominant is not None:
                valid_pairs = self.dominant_valid[s]
                if err is not None:  # an error position ranks nothing (as in training)
                    valid_pairs = valid_pairs & ~err.unsqueeze(1)
                dominant = self.layer.head_logits(self.hidden[s], self.dominant[s], offset=offset)
                n_pairs = int(valid_pairs.sum())
                ranked += float(ranking_loss(logits[:, 0], dominant, valid_pairs, self.margin)) * n_pairs
                pairs += n_pairs
            loss = sigmoid_head_loss(logits, self.valid[s], err, self.error_weight)
            ok = torch.ones_like(self.targets[s], dtype=torch.bool) if err is None else ~err
            valid = self.valid[s] & ok.unsqueeze(1)
            n = valid.sum().item() + self.targets[s].shape[0]
            losses.append(loss.item() * n)
            weights.append(n)
            pos.append(logits[:, 0][ok])
            neg.append(logits[:, 1:][valid])
            bad.append(logits[:, 0][~ok])
        pos, neg, bad = torch.cat(pos), torch.cat(neg), torch.cat(bad)
        labels = torch.cat([torch.ones_like(pos), torch.zeros_like(neg)])
        out = {
            "dev_bce": sum(losses) / sum(weights),
            "dev_auroc": auroc(torch.cat([pos, neg]).cpu().numpy(), labels.cpu().numpy()),
            "dev_mean_sigmoid_reference": float(torch.sigmoid(pos).mean()),
            "dev_mean_sigmoid_negative": float(torch.sigmoid(neg).mean()),
            "dev_positions": int(pos.shape[0]),
        }
        if self.dominant is not None:
            out["dev_ranking"] = ranked / max(pairs, 1)
            out["dev_loss"] = out["dev_bce"] + self.ranking_weight * out["dev_ranking"]
        if self.errors is not None and bad.numel():
            both = torch.cat([pos, bad]).cpu().numpy()
            flags = torch.cat([torch.ones_like(pos), torch.zeros_like(bad)]).cpu().numpy()
            out["dev_error_auroc"] = auroc(both, flags)
            out["dev_error_positions"] = int(bad.shape[0])
        return out
