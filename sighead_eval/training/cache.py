"""The frozen pass done once: what every planned epoch of Sigmoid Head training needs, exactly.

With `cache_hidden`, training runs the frozen model once over its examples and keeps, for each
response position:
- the head input `h` (fp16: 2 bytes times the hidden size) and the reference token;
- the LM's log-sum-exp there (one float: what the 'log_softmax' offset subtracts, so one cache
  serves heads with and without the offset);
- for each planned epoch, its K negatives and whether each is valid, drawn during the pass from the
  position's whole softmax. The dominant sets and the softmax proposal see the full distribution,
  as in an uncached run: nothing is approximated by a top-k cache, which could not give them.

Epochs then run over the cache without the model: a gather of 1 + K head rows and a dot product
for each pair. Per position that is 2H + 8 + epochs x 9K bytes: 1,432 bytes for SmolLM2
(H = 576) with 3 epochs of 10 negatives, so a million positions take 1.4 GB of memory. The cache
is held in memory. The `full` ablation needs every logit at every step, so its cache keeps `h`
and the reference only, and recomputes the logits with the frozen LM head (which needs logits
that are a plain linear map of `h`).

With `cache_dir`, the pass is also written there, in shards of `SHARD` examples, each written
atomically once computed. An interrupted pass resumes at the first missing shard. Later runs with
the same model, examples and negative settings reuse the cache (learning rates and offsets may
differ; a run may plan fewer epochs than the cache holds, not more). `cache.json` holds the key,
and a directory holding another run's cache is refused. Under data parallelism, each process computes
every `world`-th shard and then reads the others' shards from the directory.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from ..files import atomic_path, write_atomic
from ..frozen import base_head, unwrap
from .data import error_flags
from .negatives import pad_pairs

SHARD = 256  # examples per shard on disk
CACHE_SEED_PART = 77003  # the cache's negatives come from their own seeded stream
KEY_FIELDS = (
    "seed",
    "negatives",
    "num_negatives",
    "unigram_share",
    "softmax_temperature",
    "p_jump",
    "epsilon",
    "dominant_mode",
    "negative_top_p",
    "batch_size",
    "dtype",
)  # fmt: skip (what the cached negatives depend on; not the offset, lr or schedule)


class CacheError(RuntimeError):
    pass


def examples_digest(examples) -> str:
    """A fingerprint of the examples' token ids and trained spans."""
    h = hashlib.sha256()
    for e in examples:
        h.update(np.asarray(e.ids, dtype=np.int64).tobytes())
        h.update(np.asarray([e.start, -1], dtype=np.int64).tobytes())
        if e.positions is not None:  # several turns: which tokens are trained
            h.update(np.asarray([*e.positions, -2], dtype=np.int64).tobytes())
        if e.errors is not None:  # error-span training: which tokens are errors
            h.update(np.asarray([*e.errors, -3], dtype=np.int64).tobytes())
    return h.hexdigest()


def cache_key(trainer) -> dict:
    """What a cached frozen pass depends on: the model, the training and dev examples and the
    negatives' settings."""
    return {
        "model": trainer.base_name,
        "examples": len(trainer.train_set),
        "digest": examples_digest(trainer.train_set),
        "dev_digest": examples_digest(trainer.dev_examples),
        **{name: getattr(trainer.config, name) for name in KEY_FIELDS},
        **({"ranking_pairs": True} if trainer.config.ranking else {}),  # the dominant pairs stored
    }


def claim(directory: Path, key: dict, epochs: int, rank: int) -> int:
    """Uses `directory` for the cache `key` and returns the epochs its negatives cover. A missing or
    empty directory is claimed for `epochs`; one holding this key is reused (or resumed) when it
    covers `epochs`; any other is refused."""
    meta, where = directory / "cache.json", f"cache_dir {str(directory)!r}"
    if meta.exists():
        held = json.loads(meta.read_text())
        cached = held.pop("epochs")
        if held != key:
            differ = sorted(k for k in set(held) | set(key) if held.get(k) != key.get(k))
            raise CacheError(
                f"{where} holds the frozen pass of another run (it differs in {differ}); "
                "give another directory, or delete this one to rebuild it"
            )
        if epochs > cached:
            raise CacheError(
                f"{where} holds negatives for {cached} epochs and this run plans {epochs}; "
                f"train at most {cached} epochs with it, or give another directory"
            )
        return cached
    if directory.exists() and any(directory.iterdir()):
        raise CacheError(f"{where} is not empty and holds no cache.json; give an empty or new directory")
    if rank == 0:
        write_atomic(meta, json.dumps({**key, "epochs": epochs}, indent=1))
    return epochs


class FrozenCache:
    """The cached frozen pass over `examples` (see the module docstring).

    `trainer` gives the model, its head layer, the config, the unigram and the padding id.
    `batch(indices, epoch)` returns what one training batch needs."""

    def __init__(self, trainer, examples, directory: str | Path | None = None, progress: bool = True):
        """`directory` has been claimed (`claim`) for `trainer.cache_epochs` epochs, or is None."""
        config = trainer.config
        self.layer = trainer.layer
        self.dense = config.negatives == "full"
        self.epochs = trainer.cache_epochs or config.epochs
        self._trainer = trainer
        if self.dense:
            self.lm_head = base_head(trainer.model).weight
        self.directory = Path(directory) if directory is not None else None
        shards = list(range(0, len(examples), SHARD))
        shared = self.directory is not None and trainer.world > 1
        mine = [s for i, s in enumerate(shards) if not shared or i % trainer.world == trainer.rank]
        parts: dict[int, dict[str, torch.Tensor]] = {}
        from tqdm.auto import tqdm

        todo = [s for s in mine if self._path(s) is None or not self._path(s).exists()]
        bar = tqdm(
            total=sum(e.n_targets for s in todo for e in examples[s : s + SHARD]),
            desc="frozen pass (cache)",
            unit="tok",
            disable=not progress or trainer.rank != 0 or not todo,
        )
        for start in mine:
            path = self._path(start)
            if path is not None and path.exists():
                continue
            part = self._build(examples[start : start + SHARD], start, bar)
            if path is not None:
                with atomic_path(path) as tmp:
                    save_file(part, str(tmp))
            parts[start] = part
        bar.close()
        if shared:
            import torch.distributed as dist

            dist.barrier()
        for start in shards:
            if start not in parts:
                parts[start] = load_file(str(self._path(start)))
        self._join([parts[s] for s in shards], trainer.device)

    # -- building -----------------------------------------------------------------------------
    def _path(self, start: int) -> Path | None:
        return None if self.directory is None else self.directory / f"shard-{start // SHARD:05d}.safetensors"

    @torch.no_grad()
    def _build(self, examples, first: int, bar) -> dict[str, torch.Tensor]:
        """One shard: the frozen pass over `examples` with every epoch's negatives. Batches are
        formed by length (less padding); the shard keeps the examples' order."""
        from .negatives import _generator, dominant_pairs, dominant_sets, draw_negatives

        trainer, config = self._trainer, self._trainer.config
        order = sorted(range(len(examples)), key=lambda i: (len(examples[i].ids), i))
        fields: dict[str, list] = {
            name: [None] * len(examples)
            for name in ("hidden", "targets", "lse", "neg", "ok", "dom", "domok", "errors")
        }
        for b in range(0, len(order), config.batch_size):
            chosen = order[b : b + config.batch_size]
            batch = [examples[i] for i in chosen]
            frozen = trainer.frozen(batch)
            if self.dense and getattr(unwrap(trainer.model), "_sighead_fast_logits_ok", None) is not True:
                raise CacheError(
                    "the `full` ablation's cache recomputes logits from the head inputs, which needs a model "
                    "whose logits are a linear map of them; this one has a logits bias or soft-capping. "
                    "Train it without cache_hidden."
                )
            got = {
                "hidden": frozen.hidden.to(torch.float16).cpu(),
                "targets": frozen.targets.to(torch.int32).cpu(),
            }
            if config.error_spans:
                flags = error_flags(batch)
                got["errors"] = (
                    flags if flags is not None else torch.zeros(len(got["targets"]), dtype=torch.bool)
                )
            if not self.dense:
                got["lse"] = torch.logsumexp(frozen.logits.float(), -1).cpu()
                stream = (CACHE_SEED_PART, first + b + 1)
                generator = _generator(config.seed, *stream, device=frozen.logits.device)
                ranked = config.ranking or config.negatives == "dominant"
                sets = dominant_sets(frozen, config) if ranked else None
                rounds = draw_negatives(
                    frozen,
                    config,
                    trainer.unigram,
                    generator,
                    config.negatives,
                    config.negative_top_p,
                    self.epochs,
                    sets=sets,
                )
                if config.ranking:  # the dominant tokens other than the reference, once (no epoch)
                    dom, domok = dominant_pairs(sets, frozen.targets)
                    got["dom"], got["domok"] = dom.to(torch.int32).cpu(), domok.cpu()
                got["neg"] = torch.stack([n for n, _ in rounds]).to(torch.int32).cpu()  # (E, n, K)
                got["ok"] = torch.stack([v for _, v in rounds]).cpu()
            for name, value in got.items():
                dim = 1 if name in ("neg", "ok") else 0
                for i, piece in zip(chosen, value.split(frozen.counts, dim=dim)):
                    fields[name][i] = piece
            bar.update(frozen.targets.shape[0])
        part = {
            "hidden": torch.cat(fields["hidden"]),
            "targets": torch.cat(fields["targets"]),
            "counts": torch.tensor([e.n_targets for e in examples], dtype=torch.int64),
        }
        if not self.dense:
            part["log_normalizers"] = torch.cat(fields["lse"])
            part["negatives"] = torch.cat(fields["neg"], dim=1).contiguous()
            part["valid"] = torch.cat(fields["ok"], dim=1).contiguous()
        if config.ranking:
            part["dominant"], part["dominant_valid"] = pad_pairs(fields["dom"]), pad_pairs(fields["domok"])
        if config.error_spans:
            part["errors"] = torch.cat(fields["errors"])
        return part

    def _join(self, parts: list[dict[str, torch.Tensor]], device: torch.device) -> None:
        def cat(name, dim=0):
            return torch.cat([p[name] for p in parts], dim=dim).to(device) if name in parts[0] else None

        self.hidden = cat("hidden")  # (N, H) fp16
        self.targets = cat("targets").long()  # (N,)
        self.log_normalizers = cat("log_normalizers")  # (N,), or None for the `full` ablation
        self.negatives = cat("negatives", 1)  # (E, N, K) int32, or None
        self.valid = cat("valid", 1)  # (E, N, K) bool, or None
        # the ranking loss's pairs: (N, D) ids and their mask (shards padded to the widest), or None
        ranked = "dominant" in parts[0]
        self.dominant = pad_pairs([p["dominant"] for p in parts]).to(device) if ranked else None
        self.dominant_valid = pad_pairs([p["dominant_valid"] for p in parts]).to(device) if ranked else None
        self.errors = cat("errors")  # (N,) bool: inside an error span, or None
        counts = torch.cat([p["counts"] for p in parts])
        self.starts = torch.cat([torch.zeros(1, dtype=torch.int64), counts.cumsum(0)]).tolist()

    # -- reading --------------------------------------------------------------------------------
    @property
    def positions(self) -> int:
        return self.targets.shape[0]

    def nbytes(self) -> int:
        tensors = (
            self.hidden, self.targets, self.log_normalizers, self.negatives, self.valid, self.dominant,
            self.dominant_valid,
        )  # fmt: skip
        return sum(t.numel() * t.element_size() for t in tensors if t is not None)

    def rows(self, indices: list[int]) -> torch.Tensor:
        """Cache rows of the examples `indices`, in order."""
        spans = [torch.arange(self.starts[i], self.starts[i + 1]) for i in indices]
        return torch.cat(spans).to(self.hidden.device)

    def loss(self, indices: list[int], epoch: int, rows_module=None) -> tuple[torch.Tensor, int]:
        """(loss, positions) of one training batch of examples `indices` in `epoch`."""
        from .loss import full_vocab_loss

        r = self.rows(indices)
        hidden = self.hidden.index_select(0, r).float()
        targets = self.targets.index_select(0, r)
        if self.dense:
            base = F.linear(hidden, self.lm_head.float())
            return full_vocab_loss(self.layer.head_logits(hidden, None, base_logits=base), targets), r.numel()
        negatives = self.negatives[epoch].index_select(0, r).long()
        offset = self.layer.logit_offset(log_normalizer=self.log_normalizers.index_select(0, r))
        pairs = None
        if self.dominant is not None:
            pairs = (self.dominant.index_select(0, r).long(), self.dominant_valid.index_select(0, r))
        valid = self.valid[epoch].index_select(0, r)
        errors = self.errors.index_select(0, r) if self.errors is not None else None
        loss = self._trainer.pair_loss(
            hidden, targets, negatives, valid, pairs, rows_module, errors=errors, offset=offset
        )
        return loss, r.numel()
