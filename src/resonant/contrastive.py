"""The signal-aware supervised-contrastive latent space, adapted to dijet events.

An encoder (:class:`resonant.models.encoder.ContrastiveEncoder`) maps each
event -- its two jets and their leading constituents as a set of tokens -- to
a ``latent_dim``-dimensional gaussian. It is trained on simulated events
labelled by process group (QCD and signal models) with the supervised
contrastive loss on a projection of the sampled latent vector, plus ``beta``
times the KL divergence of the gaussian to N(0, 1). The posterior means are
the features of CATHODE in the latent space.

The tokens carry nothing that fixes m_jj: no absolute jet pT, eta, phi or
energy, no m_jj, no rapidity gap between the jets. Jet tokens hold the mass,
the N-subjettiness ratios, the multiplicity and the jet's share of the dijet
pT (invariant under a common scaling of the jets' pT); constituent tokens hold
pT fractions and angles relative to their jet's axis.

Pipeline::

    tokens, mask = event_tokens(table, n_constituents)
    scaler = TokenScaler().fit(tokens[train], mask[train])
    model, history = train_encoder((scaler.transform(...), mask, groups), (...), settings, seed, workdir)
    z = encode(model, scaler, tokens, mask)
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import lightning as L
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from . import io, seeds
from .errors import InputError
from .features import EPS
from .models.encoder import ContrastiveEncoder
from .pointcloud import NO_CONSTITUENTS_FIX, leading_constituents
from .train.schedule import lr_factor

log = logging.getLogger(__name__)

JET_TOKEN_FEATURES = ("jet_log_m", "jet_tau1", "jet_tau2", "jet_tau3", "jet_tau21", "jet_tau32", "jet_log_n",
                      "jet_pt_share")
CONSTITUENT_TOKEN_FEATURES = ("const_log_pt_rel", "const_deta", "const_dphi", "const_log_dr")
FLAG_TOKEN_FEATURES = ("in_heavy_jet", "in_light_jet", "is_constituent")
#: the features of every token; fields that do not apply to a token's kind are 0
TOKEN_FEATURES = JET_TOKEN_FEATURES + CONSTITUENT_TOKEN_FEATURES + FLAG_TOKEN_FEATURES
_J = slice(0, len(JET_TOKEN_FEATURES))
_C = slice(_J.stop, _J.stop + len(CONSTITUENT_TOKEN_FEATURES))
_IS_CONST = TOKEN_FEATURES.index("is_constituent")

#: training settings; the encoder's architecture keys are those of ContrastiveEncoder
DEFAULTS = {
    "n_constituents": 16, "latent_dim": 6, "dim": 64, "heads": 4, "particle_blocks": 2, "class_blocks": 1,
    "proj_dim": 32, "dropout": 0.0, "temperature": 0.1, "beta": 0.01, "lr": 1e-3, "warmup_epochs": 1,
    "epochs": 20, "patience": 5, "batch_size": 512, "lr_interval": "step",
}
ARCHITECTURE = ("latent_dim", "dim", "heads", "particle_blocks", "class_blocks", "proj_dim", "dropout")



def settings_with_defaults(settings: dict | None) -> dict:
    """``DEFAULTS`` updated by ``settings``; unknown keys raise ``ValueError``."""
    settings = dict(settings or {})
    unknown = sorted(set(settings) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown contrastive setting(s) {', '.join(unknown)} (allowed: {', '.join(DEFAULTS)})")
    out = {**DEFAULTS, **settings}
    if out["lr_interval"] not in ("step", "epoch"):
        raise ValueError(f"lr_interval must be 'step' or 'epoch', got {out['lr_interval']!r}")
    return out


def make_encoder(n_features: int, settings: dict) -> ContrastiveEncoder:
    s = {**DEFAULTS, **settings}
    return ContrastiveEncoder(n_features, **{k: s[k] for k in ARCHITECTURE})


# --------------------------------------------------------------------------------------------- tokens

def _np(table: pa.Table, name: str) -> np.ndarray:
    return table.column(name).to_numpy().astype(np.float64)


def event_tokens(table: pa.Table, n_constituents: int, source="table") -> tuple[np.ndarray, np.ndarray]:
    """The token set of every event: ``tokens`` float32 (N, T, F) and ``mask`` bool (N, T).

    T = 2 + 2 n_constituents: the heavier jet, the lighter jet, then the leading
    ``n_constituents`` constituents of the heavier and of the lighter jet (zero-padded,
    mask False). F = ``len(TOKEN_FEATURES)``. Raises ``InputError`` (naming ``source``)
    for a table without constituents or with non-finite values.
    """
    k = int(n_constituents)
    if k < 0:
        raise ValueError(f"n_constituents must be >= 0, got {n_constituents}")
    names = table.schema.names
    for j in ("j1", "j2"):
        for f in ("pt", "m", "n", "tau1", "tau2", "tau3"):
            if f"{j}_{f}" not in names:
                raise InputError(source, f"column '{j}_{f}' is missing", "rerun the clustering stage",
                                 field=f"{j}_{f}")
    if k > 0:
        for j in ("j1", "j2"):
            if f"{j}_constituents" not in names:
                raise InputError(source, "the jets table has no constituents (column "
                                 f"'{j}_constituents' is missing: imported from a features-only file?)",
                                 NO_CONSTITUENTS_FIX, field=f"{j}_constituents")

    n = table.num_rows
    heavy_is_2 = _np(table, "j2_m") > _np(table, "j1_m")
    pt_sum = _np(table, "j1_pt") + _np(table, "j2_pt")

    def jet(j):
        m, t1, t2, t3 = (_np(table, f"{j}_{f}") for f in ("m", "tau1", "tau2", "tau3"))
        return np.stack([np.log1p(np.maximum(m, 0.0)), t1, t2, t3, t2 / (t1 + EPS), t3 / (t2 + EPS),
                         np.log1p(np.maximum(_np(table, f"{j}_n"), 0.0)),
                         _np(table, f"{j}_pt") / np.where(pt_sum > 0, pt_sum, 1.0)], axis=1)

    def heavy_light(a, b):
        sel = heavy_is_2.reshape((-1,) + (1,) * (a.ndim - 1))
        return np.where(sel, b, a), np.where(sel, a, b)

    tokens = np.zeros((n, 2 + 2 * k, len(TOKEN_FEATURES)), np.float32)
    mask = np.zeros((n, 2 + 2 * k), bool)
    flags = [TOKEN_FEATURES.index("in_heavy_jet"), TOKEN_FEATURES.index("in_light_jet")]
    for slot, feats in enumerate(heavy_light(jet("j1"), jet("j2"))):
        tokens[:, slot, _J] = feats
        tokens[:, slot, flags[slot]] = 1.0
        mask[:, slot] = True
    if k > 0:
        c1 = np.stack(leading_constituents(table.column("j1_constituents"), k), axis=-1)
        c2 = np.stack(leading_constituents(table.column("j2_constituents"), k), axis=-1)
        for slot, c in enumerate(heavy_light(c1, c2)):
            pt_rel, deta, dphi, valid = (c[..., i] for i in range(4))
            valid = valid.astype(bool)
            dr = np.hypot(deta, dphi)
            feats = np.stack([np.log(np.maximum(pt_rel, 1e-6)), deta, dphi, np.log(np.maximum(dr, 1e-4))], -1)
            rows = slice(2 + slot * k, 2 + (slot + 1) * k)
            tokens[:, rows, _C] = np.where(valid[..., None], feats, 0.0)
            tokens[:, rows, flags[slot]] = valid
            tokens[:, rows, _IS_CONST] = valid
            mask[:, rows] = valid
    bad = ~np.isfinite(tokens)
    if bad.any():
        f = int(np.argmax(bad.any(axis=(0, 1))))
        n_bad = int(bad[..., f].any(axis=1).sum())
        raise InputError(source, f"{n_bad} event(s) give NaN or infinite token feature '{TOKEN_FEATURES[f]}'",
                         "repair or remove those events at the source", field=TOKEN_FEATURES[f])
    return tokens, mask


class TokenScaler:
    """Per-feature standardisation of tokens, fitted on valid training tokens only.

    Jet features are standardised over the jet tokens, constituent features over the
    constituent tokens; the flags are left as they are. Fields that do not apply to a
    token, and padded tokens, stay 0.
    """

    def __init__(self):
        self.mean = self.std = None

    def _kinds(self, tokens, mask):
        const = tokens[..., _IS_CONST] > 0.5
        return mask & ~const, mask & const

    def fit(self, tokens: np.ndarray, mask: np.ndarray, chunk: int = 65536) -> "TokenScaler":
        if tokens.shape[-1] != len(TOKEN_FEATURES):
            raise ValueError(f"expected {len(TOKEN_FEATURES)} token features, got {tokens.shape[-1]}")
        f = len(TOKEN_FEATURES)
        s1, s2, cnt = np.zeros(f), np.zeros(f), np.zeros(f)
        for i in range(0, len(tokens), chunk):
            x = tokens[i:i + chunk].astype(np.float64)
            for kind, sl in zip(self._kinds(x, mask[i:i + chunk]), (_J, _C)):
                v = x[kind][:, sl]
                s1[sl] += v.sum(0)
                s2[sl] += (v * v).sum(0)
                cnt[sl] += len(v)
        mean = np.divide(s1, cnt, out=np.zeros(f), where=cnt > 0)
        var = np.divide(s2, cnt, out=np.ones(f), where=cnt > 0) - mean**2
        std = np.sqrt(np.maximum(var, 0.0))
        self.mean = mean
        self.std = np.where(std > 1e-6, std, 1.0)
        self.mean[_C.stop:], self.std[_C.stop:] = 0.0, 1.0
        return self

    def transform(self, tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Standardised float32 copy of ``tokens``."""
        if self.mean is None:
            raise RuntimeError("TokenScaler.transform before fit")
        x = tokens.astype(np.float32, copy=True)
        jets, const = self._kinds(tokens, mask)
        for kind, sl in ((jets, _J), (const, _C)):
            z = (x[..., sl] - self.mean[sl].astype(np.float32)) / self.std[sl].astype(np.float32)
            x[..., sl] = np.where(kind[..., None], z, 0.0)
        x[~mask] = 0.0
        return x

    def to_dict(self) -> dict:
        return {"features": list(TOKEN_FEATURES), "mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "TokenScaler":
        if list(d.get("features", [])) != list(TOKEN_FEATURES):
            raise ValueError("the scaler was fitted on another token layout; retrain the encoder")
        self = cls()
        self.mean, self.std = np.asarray(d["mean"], np.float64), np.asarray(d["std"], np.float64)
        return self


# --------------------------------------------------------------------------------------------- losses

def supcon_loss(proj: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al., one view per event) of L2-normalised ``proj`` (B, P).

    For anchor i with positives P(i) (same label, not i):
    -1/|P(i)| sum_p log[exp(z_i.z_p / t) / sum_{a != i} exp(z_i.z_a / t)], averaged over
    the anchors that have positives (0 if none has).
    """
    labels = labels.reshape(-1)
    n = proj.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=proj.device)
    logits = (proj @ proj.T / temperature).masked_fill(eye, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    pos = (labels[:, None] == labels[None, :]) & ~eye
    n_pos = pos.sum(1)
    per_anchor = -torch.where(pos, log_prob, torch.zeros_like(log_prob)).sum(1) / n_pos.clamp_min(1)
    has = n_pos > 0
    if not bool(has.any()):
        return proj.sum() * 0.0
    return per_anchor[has].mean()


def kl_loss(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Mean over events of KL(N(mean, exp(logvar)) || N(0, 1)), summed over the latent dimensions."""
    return (0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar)).sum(1).mean()


# --------------------------------------------------------------------------------------------- sampling

class BalancedBatchSampler:
    """Batches with the same number of events of every process group.

    Each global batch holds ``batch_size // n_groups`` events per group (rounded down to a
    multiple of ``world_size``); process ``rank`` gets its own slice of it, which is itself
    balanced; the slices of a batch are disjoint and together form the global batch. Within
    an epoch a group is drawn as successive random permutations: a large group without
    repeats, a small one oversampled (each event used about equally often, never twice in one
    batch unless the group has fewer events than a batch takes of it). The
    batches depend only on (``seed``, epoch): call :meth:`set_epoch` before every epoch.
    Without ``batches_per_epoch`` an epoch has ``n_events // global batch`` batches (at least 1).
    Yields int64 index arrays.
    """

    def __init__(self, groups, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 batches_per_epoch: int | None = None):
        groups = np.asarray(groups).reshape(-1)
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} out of range for world size {world_size}")
        self.members = [np.flatnonzero(groups == g) for g in np.unique(groups)]
        if not self.members:
            raise ValueError("no events to sample")
        n_groups = len(self.members)
        self.per_rank = int(batch_size) // (n_groups * world_size)  # events of each group per rank and batch
        if self.per_rank < 1:
            raise ValueError(f"batch_size {batch_size} is smaller than {n_groups} groups x {world_size} processes")
        self.batch_size = self.per_rank * n_groups * world_size
        self.seed, self.rank, self.world_size = int(seed), int(rank), int(world_size)
        self.batches = int(batches_per_epoch) if batches_per_epoch else max(1, len(groups) // self.batch_size)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def global_batches(self) -> np.ndarray:
        """(batches, groups, world_size, per_rank) event indices of the current epoch."""
        rng = np.random.default_rng([self.seed, self.epoch])
        need = self.batches * self.world_size * self.per_rank
        streams = []
        per_batch = self.world_size * self.per_rank
        for idx in self.members:
            # successive permutations, each cut to a whole number of batches when the group is large
            # enough: then no event appears twice in one global batch
            use = len(idx) - len(idx) % per_batch if len(idx) >= per_batch else len(idx)
            reps = -(-need // use)
            order = np.concatenate([rng.permutation(len(idx))[:use] for _ in range(reps)])[:need]
            streams.append(idx[order].reshape(self.batches, self.world_size, self.per_rank))
        return np.stack(streams, axis=1)

    def __iter__(self):
        for batch in self.global_batches()[:, :, self.rank, :]:
            yield batch.reshape(-1)

    def __len__(self) -> int:
        return self.batches


class _FixedBatches:
    """The same list of index batches every epoch (validation)."""

    def __init__(self, batches):
        self.batches = [np.asarray(b) for b in batches]

    def __iter__(self):
        return iter(self.batches)

    def __len__(self):
        return len(self.batches)


class _TokenData(torch.utils.data.Dataset):
    """Indexed by an array of event indices; returns a whole batch (tokens, mask, group)."""

    def __init__(self, tokens, mask, groups):
        self.tokens = torch.as_tensor(np.asarray(tokens, np.float32))
        self.mask = torch.as_tensor(np.asarray(mask, bool))
        self.groups = torch.as_tensor(np.asarray(groups, np.int64))

    def __len__(self):
        return len(self.tokens)

    def __getitem__(self, idx):
        idx = torch.as_tensor(idx, dtype=torch.long)
        return self.tokens[idx], self.mask[idx], self.groups[idx]


# --------------------------------------------------------------------------------------------- training

class EncoderModule(L.LightningModule):
    """The encoder and its loss: supcon(project(z)) + beta KL, z sampled (training) or the mean (validation)."""

    def __init__(self, n_features: int, settings: dict, steps_per_epoch: int = 1):
        super().__init__()
        self.settings = settings_with_defaults(settings)
        self.model = make_encoder(n_features, self.settings)
        self.steps_per_epoch = max(1, int(steps_per_epoch))
        self.history = {"train_loss": [], "val_loss": [], "val_supcon": [], "val_kl": [], "lr": [],
                        "epoch_time": []}
        self._t0 = time.perf_counter()

    def forward(self, tokens, mask):
        return self.model(tokens, mask)

    def losses(self, tokens, mask, groups, sample: bool):
        mean, logvar = self.model(tokens, mask)
        z = self.model.reparameterise(mean, logvar) if sample else mean
        sc = supcon_loss(self.model.project(z), groups, self.settings["temperature"])
        kl = kl_loss(mean, logvar)
        return sc + self.settings["beta"] * kl, sc, kl

    def on_train_epoch_start(self):
        self._t0 = time.perf_counter()
        self._train_acc = torch.zeros(2, dtype=torch.float64, device=self.device)

    def training_step(self, batch, batch_idx):
        tokens, mask, groups = batch
        loss, _, _ = self.losses(tokens, mask, groups, sample=True)
        self._train_acc += torch.stack([loss.detach().double() * len(groups),
                                        torch.tensor(len(groups), dtype=torch.float64, device=self.device)])
        return loss

    def on_validation_epoch_start(self):
        self._val_acc = torch.zeros(4, dtype=torch.float64, device=self.device)

    def validation_step(self, batch, batch_idx):
        tokens, mask, groups = batch
        loss, sc, kl = self.losses(tokens, mask, groups, sample=False)
        n = len(groups)
        self._val_acc += torch.stack([loss.double() * n, sc.double() * n, kl.double() * n,
                                      torch.tensor(n, dtype=torch.float64, device=self.device)])

    def on_validation_epoch_end(self):
        acc = self.trainer.strategy.reduce(self._val_acc, reduce_op="sum")
        loss, sc, kl = (acc[:3] / acc[3].clamp_min(1)).tolist()
        self._val = (loss, sc, kl)
        self.log("val_loss", loss, sync_dist=True)

    def on_train_epoch_end(self):
        acc = self.trainer.strategy.reduce(self._train_acc, reduce_op="sum")
        train = float(acc[0] / acc[1].clamp_min(1))
        val, sc, kl = getattr(self, "_val", (math.nan,) * 3)
        h = self.history
        h["train_loss"].append(train)
        h["val_loss"].append(val)
        h["val_supcon"].append(sc)
        h["val_kl"].append(kl)
        h["lr"].append(self.trainer.optimizers[0].param_groups[0]["lr"])
        h["epoch_time"].append(time.perf_counter() - self._t0)
        if not (math.isfinite(train) and math.isfinite(val)):
            raise FloatingPointError(f"contrastive encoder: the loss diverged at epoch {self.current_epoch} "
                                     f"(train {train}, val {val}); lower the learning rate")
        if self.trainer.is_global_zero:
            log.info("encoder epoch %d: train %.5f val %.5f (supcon %.5f, kl %.4f; best %.5f) lr %.2e %.1fs",
                     self.current_epoch, train, val, sc, kl, min(h["val_loss"]), h["lr"][-1],
                     h["epoch_time"][-1])

    def configure_optimizers(self):
        s = self.settings
        opt = torch.optim.Adam(self.model.parameters(), lr=s["lr"])
        if s["lr_interval"] == "step":
            warm, total = s["warmup_epochs"] * self.steps_per_epoch, s["epochs"] * self.steps_per_epoch
        else:
            warm, total = s["warmup_epochs"], s["epochs"]
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: lr_factor(i, warm, total))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": s["lr_interval"]}}

class EncoderData(L.LightningDataModule):
    """Balanced training batches (a new draw every epoch) and fixed balanced validation batches."""

    def __init__(self, train, val, batch_size: int, seed: int):
        super().__init__()
        self.train_set, self.val_set = _TokenData(*train), _TokenData(*val)
        self.train_groups, self.val_groups = np.asarray(train[2]), np.asarray(val[2])
        self.batch_size, self.seed = batch_size, seed

    def _loader(self, data, sampler):
        return torch.utils.data.DataLoader(data, sampler=sampler, batch_size=None, num_workers=0)

    def train_dataloader(self):
        t = self.trainer
        return self._loader(self.train_set, BalancedBatchSampler(self.train_groups, self.batch_size, self.seed,
                                                                 t.global_rank, t.world_size))

    def val_dataloader(self):
        t = self.trainer
        fixed = BalancedBatchSampler(self.val_groups, self.batch_size, seeds.child(self.seed, 1), t.global_rank,
                                     t.world_size)
        return self._loader(self.val_set, _FixedBatches(list(fixed)))


def _check_arrays(arrays, name):
    tokens, mask, groups = arrays
    if tokens.ndim != 3 or tokens.shape[-1] != len(TOKEN_FEATURES):
        raise ValueError(f"{name} tokens must be (N, T, {len(TOKEN_FEATURES)}), got {tokens.shape}")
    if mask.shape != tokens.shape[:2] or len(groups) != len(tokens):
        raise ValueError(f"{name}: tokens {tokens.shape}, mask {mask.shape} and groups {len(groups)} disagree")
    if len(np.unique(groups)) < 2:
        raise ValueError(f"{name}: the contrastive loss needs at least two process groups")


def train_encoder(train, val, settings: dict | None, seed: int, workdir, trainer_kwargs: dict | None = None):
    """Train a :class:`ContrastiveEncoder`; returns (model on the CPU in eval mode, history dict).

    ``train`` and ``val`` are (tokens, mask, group_index) arrays, the tokens already
    standardised by a :class:`TokenScaler` fitted on the training tokens. A Lightning
    Trainer runs ``settings["epochs"]`` epochs at most, stops when the validation loss has
    not improved for ``patience`` epochs and restores the best epoch's weights
    (checkpoints under ``workdir/checkpoints``). The Trainer's devices come from
    :func:`resonant.train.distributed.cluster_from_env`, overridden by ``trainer_kwargs``
    (whose ``callbacks`` are added to this function's). Under DDP the global batch of
    ``batch_size`` events is split between the processes, and each computes the contrastive
    loss within its own (balanced) slice.
    """
    from .train.distributed import cluster_from_env

    s = settings_with_defaults(settings)
    _check_arrays(train, "train")
    _check_arrays(val, "val")
    workdir = Path(workdir)
    L.seed_everything(int(seed), workers=True, verbose=False)
    early = L.pytorch.callbacks.EarlyStopping(monitor="val_loss", mode="min", patience=int(s["patience"]),
                                              check_finite=False)
    best = L.pytorch.callbacks.ModelCheckpoint(dirpath=workdir / "checkpoints", filename="best", monitor="val_loss",
                                               mode="min", save_top_k=1, save_weights_only=True,
                                               enable_version_counter=False)
    kwargs = {**cluster_from_env(), **dict(trainer_kwargs or {})}
    callbacks = [early, best, *kwargs.pop("callbacks", [])]
    trainer = L.Trainer(**{"max_epochs": int(s["epochs"]), "deterministic": True, "enable_progress_bar": False,
                           "enable_model_summary": False, "logger": False, "num_sanity_val_steps": 0,
                           "use_distributed_sampler": False, "default_root_dir": str(workdir), **kwargs},
                        callbacks=callbacks)
    steps = len(BalancedBatchSampler(train[2], s["batch_size"], seed, 0, trainer.world_size))
    module = EncoderModule(train[0].shape[-1], s, steps_per_epoch=steps)
    data = EncoderData(train, val, int(s["batch_size"]), int(seed))
    t0 = time.perf_counter()
    trainer.fit(module, datamodule=data)
    history = dict(module.history)
    best_epoch = int(np.nanargmin(history["val_loss"])) if history["val_loss"] else -1
    if best.best_model_path:
        ckpt = torch.load(best.best_model_path, map_location="cpu", weights_only=False)
        module.load_state_dict(ckpt["state_dict"])
        best_epoch = int(ckpt.get("epoch", best_epoch))
    history.update(best_epoch=best_epoch, stopped_epoch=len(history["train_loss"]) - 1, seed=int(seed),
                   world_size=trainer.world_size, steps_per_epoch=steps,
                   train_seconds=time.perf_counter() - t0,
                   n_parameters=sum(p.numel() for p in module.model.parameters()))
    model = module.model.cpu().eval()
    return model, history


# --------------------------------------------------------------------------------------------- inference, I/O

@torch.no_grad()
def encode(model: ContrastiveEncoder, scaler: TokenScaler, tokens: np.ndarray, mask: np.ndarray,
           batch_size: int = 4096) -> np.ndarray:
    """Posterior means (N, latent_dim) float32 of raw tokens (the scaler is applied batch by batch)."""
    model.eval()
    device = next(model.parameters()).device
    out = np.empty((len(tokens), model.latent_dim), np.float32)
    # torch's inference fast path of MultiheadAttention (nested tensors for padded sequences) is
    # ~1.5x slower than the regular path for these short token sets on a CPU
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(device.type != "cpu")
    try:
        for i in range(0, len(tokens), batch_size):
            m = np.asarray(mask[i:i + batch_size], bool)
            x = torch.from_numpy(scaler.transform(tokens[i:i + batch_size], m)).to(device)
            mean, _ = model(x, torch.from_numpy(m).to(device))
            out[i:i + batch_size] = mean.cpu().numpy()
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    return out


def save_encoder(path, model: ContrastiveEncoder, scaler: TokenScaler, settings: dict, history: dict,
                 groups) -> None:
    """``path`` (torch: weights, settings, scaler, group names) and ``path.with_suffix('.json')``."""
    path = Path(path)
    settings = {**DEFAULTS, **dict(settings or {})}
    payload = {"state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
               "n_features": int(model.embed.in_features), "settings": settings, "scaler": scaler.to_dict(),
               "groups": [str(g) for g in groups], "token_features": list(TOKEN_FEATURES)}
    with io.atomic_path(path, suffix=".tmp.pt") as tmp:
        torch.save(payload, tmp)
    io.write_json({"settings": settings, "history": history, "groups": payload["groups"],
                   "token_features": payload["token_features"],
                   "n_parameters": sum(p.numel() for p in model.parameters())}, path.with_suffix(".json"))


def load_encoder(path) -> tuple[ContrastiveEncoder, TokenScaler, dict]:
    """(model in eval mode, scaler, meta: settings, groups, token_features and, from the JSON, history)."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file does not exist", "run the contrastive encoder training stage")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same advice
        raise InputError(path, f"not a readable encoder file ({e})", "delete it and rerun the training stage") from e
    if payload.get("token_features") != list(TOKEN_FEATURES):
        raise InputError(path, "the encoder was trained on another token layout",
                         "retrain the encoder with this version of the workflow", field="token_features")
    model = make_encoder(payload["n_features"], payload["settings"])
    model.load_state_dict(payload["state_dict"])
    model.eval()
    meta = {k: payload[k] for k in ("settings", "groups", "token_features")}
    side = path.with_suffix(".json")
    if side.exists():
        meta["history"] = json.loads(side.read_text()).get("history", {})
    return model, TokenScaler.from_dict(payload["scaler"]), meta


# --------------------------------------------------------------------------------------------- tables

def encode_table(model: ContrastiveEncoder, scaler: TokenScaler, table: pa.Table, n_constituents: int,
                 source="table") -> pa.Table:
    """A latent table: the event columns of ``table`` (event_id, process, label, mjj, split if present)
    and the posterior means ``z0``, ``z1``, ..."""
    from .features import LATENT_KEEP, latent_names

    tokens, mask = event_tokens(table, n_constituents, source=source)
    z = encode(model, scaler, tokens, mask)
    cols = {k: table.column(k) for k in LATENT_KEEP if k in table.column_names}
    cols.update({n: pa.array(z[:, i]) for i, n in enumerate(latent_names(z.shape[1]))})
    return pa.table(cols)
