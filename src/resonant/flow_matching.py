"""Full-phase-space generator by conditional flow matching: a jet model and a particle model.

Two continuous normalising flows, each a velocity field v(x_t, t, cond) trained with
the optimal-transport conditional flow-matching loss (Lipman et al.; Tong et al.)::

    x0 ~ N(0, 1),  x1 = data,  t ~ U(0, 1)
    x_t = (1 - (1 - sigma) t) x0 + t x1,       target u = x1 - (1 - sigma) x0
    loss = | v(x_t, t, cond) - u |^2           (over real particles only)

and sampled by integrating dx/dt = v from noise (t = 0) to data (t = 1) with the
midpoint rule (torchdiffeq).

* **jet model** (:class:`JetFlow`): the 10-d vector of both jets' (pt, eta, phi, m, n),
  pre-processed by :class:`~resonant.pointcloud.JetTransform`, given
  ``JetTransform.mjj_condition(mjj)``; an MLP velocity. The multiplicity n is
  dequantised (+ U(-0.5, 0.5)) for training.
* **particle model** (:class:`ParticleFlow`): each jet's constituents as one cloud
  (N events give 2N clouds), pre-processed by :class:`~resonant.pointcloud.ParticleTransform`,
  given the jet's transformed (pt, eta, phi, m) and the m_jj condition; an EPiC
  velocity. A generated jet gets ``pointcloud.n_valid(jets, max_particles)`` particles.

Pipeline (the sk_cathode verbs: fit, sample, save, load)::

    jet_flow, _ = train_jet_model(train, val, settings["jet_model"], seed, workdir / "jets")
    particle_flow, _ = train_particle_model(train, val, settings["particle_model"], seed, workdir / "particles")
    jet_flow.save(path_jets); particle_flow.save(path_particles)        # global rank zero only
    with GeneratedWriter(out, max_particles, attrs) as writer:
        generate(jet_flow, particle_flow, mjj_sr, max_particles, steps, batch_size, seed, writer)

Training (one Lightning module for both models): AdamW, linear warm-up then cosine
decay per optimiser step, gradient-norm clipping by the Trainer, an exponential
moving average (EMA) of the weights that is used for validation, early stopping on
the validation loss and the best epoch's EMA weights in the returned model. Every
epoch writes ``workdir/checkpoints/last.ckpt``; a later call with the same settings,
seed and data resumes from it. All randomness of an epoch (batches, noise, times,
dequantisation) is a function of (seed, epoch, batch, rank), so a resumed training is
the same as an uninterrupted one.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch

from . import generative, io
from .generative import (GeneratorModel, JetExamples, JetModel, N_PARTICLE_CONDITION, PT_REL_RULE, ParticleExamples,  # noqa: F401
                         ParticleModel, SLOTS_PER_JET, checked_settings, from_header, jet_training_transforms,
                         particle_training_transforms, read_saved)
from .models.epic import EPiCVelocity, MLPVelocity
from .train.schedule import lr_factor  # linear warm-up, then cosine decay
from .pointcloud import (JET_FIELDS, PARTICLE_FIELDS, JetTransform, ParticleTransform, PointCloud, data_fingerprint,
                         jsonable)

log = logging.getLogger(__name__)

_TRAINING = {"lr": 1e-3, "batch_size": 1024, "epochs": 100, "patience": 10, "warmup_epochs": 1,
             "ema_decay": 0.999, "grad_clip": 0.5, "sigma": 1e-4}
#: the settings of the two models and of sampling (the published values)
DEFAULTS = {
    "jet_model": {"hidden": 128, "layers": 3, "weight_decay": 0.0, **_TRAINING},
    "particle_model": {"hidden": 150, "global_dim": 256, "layers": 8, "weight_decay": 5e-5, "pt_rel": "log1m",
                       **_TRAINING},
    "sampling": {"steps": 250, "batch_size": 4096},
}
#: per setting: integer?, the valid range, its description
_RULES = {
    **{k: (True, lambda v: v >= 1, "an integer >= 1")
       for k in ("hidden", "global_dim", "layers", "batch_size", "epochs", "patience", "steps")},
    "warmup_epochs": (True, lambda v: v >= 0, "an integer >= 0"),
    "lr": (False, lambda v: v > 0, "a number > 0"),
    "grad_clip": (False, lambda v: v > 0, "a number > 0"),
    "weight_decay": (False, lambda v: v >= 0, "a number >= 0"),
    "ema_decay": (False, lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "sigma": (False, lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "pt_rel": PT_REL_RULE,
}
_FORMAT = 1  # of the saved model files
N_JET_FEATURES = 2 * len(JET_FIELDS)  # the jet model's vector: both jets' features


def settings_with_defaults(kind: str, settings: dict | None) -> dict:
    """``DEFAULTS[kind]`` updated by ``settings``; unknown keys or out-of-range values raise ``ValueError``."""
    return checked_settings("flow_matching", DEFAULTS, _RULES, kind, settings)


# --------------------------------------------------------------------------------------------- loss and ODE

def ot_path(x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor, sigma: float):
    """(x_t, u): the point at time ``t`` (B,) on the optimal-transport path from ``x0`` to ``x1`` and its velocity."""
    tb = t.reshape(-1, *([1] * (x1.dim() - 1))).to(x1.dtype)
    xt = (1.0 - (1.0 - sigma) * tb) * x0 + tb * x1
    return xt, x1 - (1.0 - sigma) * x0


def flow_matching_loss(velocity, x0, x1, t, cond, mask=None, sigma: float = 1e-4) -> torch.Tensor:
    """Mean squared error of ``velocity(x_t, t, cond, mask)`` against the conditional target u.

    Without ``mask`` the mean runs over all elements; with a ``mask`` (B, P) over the
    features of the real particles only (padded outputs do not count).
    """
    xt, u = ot_path(x0, x1, t, sigma)
    se = (velocity(xt, t, cond, mask) - u) ** 2
    if mask is None:
        return se.mean()
    keep = mask.unsqueeze(-1).to(se.dtype)
    return (se * keep).sum() / (keep.sum() * se.shape[-1]).clamp_min(1.0)


def integrate(velocity, x0: torch.Tensor, steps: int) -> torch.Tensor:
    """x(1) of dx/dt = ``velocity(t, x)`` with x(0) = ``x0``: ``steps`` midpoint steps (2 evaluations each)."""
    from torchdiffeq import odeint

    if int(steps) < 1:
        raise ValueError(f"the ODE needs at least one step, got {steps}")
    times = torch.tensor([0.0, 1.0], dtype=x0.dtype, device=x0.device)
    return odeint(velocity, x0, times, method="midpoint", options={"step_size": 1.0 / int(steps)})[-1]


def ema_multi_avg_fn(decay: float):
    """A ``multi_avg_fn`` for ``torch.optim.swa_utils.AveragedModel``: the bias-corrected EMA of the weights.

    The average after t updates is sum_i w_i theta_i with w_i proportional to decay^(t - i)
    (as Adam debiases its moments): the plain EMA of ``decay`` once t >> 1 / (1 - decay),
    but in a short run an average of the recent weights instead of a blend dominated by
    the random initial ones. ``num_averaged`` is the number of earlier updates (>= 1; the
    first update copies the weights).
    """
    decay = float(decay)

    @torch.no_grad()
    def update(averaged: list, current: list, num_averaged) -> None:
        t = float(num_averaged) + 1.0
        weight = (1.0 - decay) / (1.0 - decay ** t) if decay > 0 else 1.0
        torch._foreach_lerp_(averaged, current, weight)

    return update


# --------------------------------------------------------------------------------------------- data

class FlowData(torch.utils.data.Dataset):
    """Training examples of a flow-matching model, a whole batch at a time.

    Indexed by ``(key, indices)`` (as :class:`KeyedBatches` yields them); returns a dict
    of tensors ``x1`` (data), ``x0`` (noise), ``t`` (times), ``cond`` and, for clouds,
    ``mask``. Noise, times and any other randomness come from a generator seeded by
    ``key`` only. Subclasses define ``__len__`` and :meth:`examples`.
    """

    def examples(self, idx: np.ndarray, rng: np.random.Generator):
        """(x1 float32 (B, ...), cond float32 (B, C), mask bool (B, P) or None) of examples ``idx``."""
        raise NotImplementedError

    def __getitem__(self, item):
        key, idx = item
        rng = np.random.default_rng(list(key))
        x1, cond, mask = self.examples(np.asarray(idx), rng)
        x0 = rng.standard_normal(x1.shape, dtype=np.float32)
        t = rng.random(len(x1), dtype=np.float32)
        batch = {"x1": torch.from_numpy(np.ascontiguousarray(x1, np.float32)), "x0": torch.from_numpy(x0),
                 "t": torch.from_numpy(t), "cond": torch.from_numpy(np.ascontiguousarray(cond, np.float32))}
        if mask is not None:
            batch["x0"] *= torch.from_numpy(mask).unsqueeze(-1)
            batch["mask"] = torch.from_numpy(np.ascontiguousarray(mask, bool))
        return batch


class ArrayData(FlowData):
    """Vectors ``x`` (N, D) with conditions ``cond`` (N, C), used as they are."""

    def __init__(self, x, cond):
        self.x, self.cond = np.asarray(x, np.float32), np.asarray(cond, np.float32).reshape(len(x), -1)

    def __len__(self):
        return len(self.x)

    def examples(self, idx, rng):
        return self.x[idx], self.cond[idx], None


class JetData(JetExamples, FlowData):
    """Events as the jet model sees them: the transformed jets (one vector), n dequantised, given m_jj."""

    def examples(self, idx, rng):
        x, cond = self.jet_tokens(idx, rng.random((len(idx), 2)))
        return x.reshape(len(idx), -1), cond, None


class ParticleData(ParticleExamples, FlowData):
    """Jets as clouds of transformed constituents, given the jet and m_jj; a batch is cut to its used slots."""

    def examples(self, idx, rng):
        return self.clouds(idx)


class KeyedBatches:
    """Batches of example indices, each with the key that seeds its noise: yields ``(key, indices)``.

    Training (``train=True``): every epoch a new permutation of the examples (a function
    of ``seed`` and the epoch; call :meth:`set_epoch`) cut into ``n // batch_size``
    global batches (the remainder is left out that epoch); process ``rank`` of
    ``world_size`` takes its share of each. Validation: the examples in order, split
    between the processes, the same batches and keys every epoch.
    """

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1, train: bool = True):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} out of range for world size {world_size}")
        if n < world_size:
            raise ValueError(f"{n} examples cannot be shared by {world_size} processes")
        self.n, self.seed, self.rank, self.world_size, self.train = int(n), int(seed), rank, world_size, train
        self.batch_size = min(int(batch_size), self.n)
        self.epoch = 0
        self.own = np.array_split(np.arange(self.n), world_size)[rank]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self):
        if self.train:
            return self.n // self.batch_size
        return -(-len(self.own) // self.batch_size)

    def __iter__(self):
        if self.train:
            perm = np.random.default_rng([self.seed, 0, self.epoch]).permutation(self.n)
            for b in range(len(self)):
                share = np.array_split(perm[b * self.batch_size:(b + 1) * self.batch_size], self.world_size)
                yield (self.seed, 0, self.epoch, b, self.rank), share[self.rank]
        else:
            for b in range(len(self)):
                yield (self.seed, 1, b, self.rank), self.own[b * self.batch_size:(b + 1) * self.batch_size]


class _FlowDataModule(L.LightningDataModule):
    def __init__(self, train: FlowData, val: FlowData, batch_size: int, seed: int):
        super().__init__()
        self.train_set, self.val_set, self.batch_size, self.seed = train, val, batch_size, seed

    def _loader(self, data, train):
        t = self.trainer
        batches = KeyedBatches(len(data), self.batch_size, self.seed, t.global_rank, t.world_size, train=train)
        return torch.utils.data.DataLoader(data, sampler=batches, batch_size=None, num_workers=0)

    def train_dataloader(self):
        return self._loader(self.train_set, True)

    def val_dataloader(self):
        return self._loader(self.val_set, False)


# --------------------------------------------------------------------------------------------- training

class FlowMatchingModule(L.LightningModule):
    """A velocity network and its flow-matching loss; keeps a per-epoch history that checkpoints carry."""

    def __init__(self, net: torch.nn.Module, settings: dict, steps_per_epoch: int, name: str = "flow",
                 fingerprint: dict | None = None):
        super().__init__()
        self.net = net
        self.settings = dict(settings)
        self.steps_per_epoch = max(1, int(steps_per_epoch))
        self.name = name
        self.fingerprint = dict(fingerprint or {})
        self.history = {"epoch": [], "train_loss": [], "val_loss": [], "lr": [], "epoch_time": [],
                        "examples_per_second": [], "resumed_at": []}
        self._t0 = time.perf_counter()

    def forward(self, x, t, cond, mask=None):
        return self.net(x, t, cond, mask)

    def _loss(self, batch):
        mask = batch.get("mask")
        loss = flow_matching_loss(self.net, batch["x0"], batch["x1"], batch["t"], batch["cond"], mask,
                                  self.settings["sigma"])
        weight = mask.sum() if mask is not None else torch.tensor(len(batch["x1"]), device=self.device)
        return loss, weight.to(torch.float64)

    def on_train_epoch_start(self):
        self._t0 = time.perf_counter()
        self._train_acc = torch.zeros(3, dtype=torch.float64, device=self.device)

    def training_step(self, batch, batch_idx):
        loss, w = self._loss(batch)
        n = torch.tensor(float(len(batch["x1"])), dtype=torch.float64, device=self.device)
        self._train_acc += torch.stack([loss.detach().double() * w, w, n])
        return loss

    def on_validation_epoch_start(self):
        self._val_acc = torch.zeros(2, dtype=torch.float64, device=self.device)

    def validation_step(self, batch, batch_idx):
        loss, w = self._loss(batch)
        self._val_acc += torch.stack([loss.double() * w, w])

    def on_validation_epoch_end(self):
        acc = self.trainer.strategy.reduce(self._val_acc, reduce_op="sum")
        self._val = float(acc[0] / acc[1].clamp_min(1))
        self.log("val_loss", self._val, sync_dist=True)

    def on_train_epoch_end(self):
        acc = self.trainer.strategy.reduce(self._train_acc, reduce_op="sum")
        train = float(acc[0] / acc[1].clamp_min(1))
        val = getattr(self, "_val", math.nan)
        seconds = time.perf_counter() - self._t0
        h = self.history
        h["epoch"].append(int(self.current_epoch))
        h["train_loss"].append(train)
        h["val_loss"].append(val)
        h["lr"].append(float(self.trainer.optimizers[0].param_groups[0]["lr"]))
        h["epoch_time"].append(seconds)
        h["examples_per_second"].append(float(acc[2]) / max(seconds, 1e-9))
        if not (math.isfinite(train) and math.isfinite(val)):
            raise FloatingPointError(f"{self.name}: the loss diverged at epoch {self.current_epoch} (train {train}, "
                                     f"val {val}); lower the learning rate or the gradient clip")
        if self.trainer.is_global_zero:
            best = int(np.argmin(h["val_loss"]))
            log.info("%s epoch %d/%d: train %.5f val %.5f (best %.5f at epoch %d) lr %.2e %.1fs %.0f examples/s",
                     self.name, self.current_epoch, self.trainer.max_epochs - 1, train, val, h["val_loss"][best],
                     h["epoch"][best], h["lr"][-1], seconds, h["examples_per_second"][-1])

    def on_save_checkpoint(self, checkpoint):
        t = self.trainer
        checkpoint["flow_matching"] = {
            "history": self.history, "fingerprint": self.fingerprint,
            "finished": bool(t.should_stop or self.current_epoch + 1 >= t.max_epochs)}

    def on_load_checkpoint(self, checkpoint):
        state = checkpoint.get("flow_matching", {})
        self.history = {k: list(v) for k, v in state.get("history", self.history).items()}
        self.history.setdefault("resumed_at", []).append(int(checkpoint.get("epoch", -1)) + 1)

    def configure_optimizers(self):
        s = self.settings
        opt = torch.optim.AdamW(self.net.parameters(), lr=s["lr"], weight_decay=s["weight_decay"])
        warm, total = s["warmup_epochs"] * self.steps_per_epoch, s["epochs"] * self.steps_per_epoch
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: lr_factor(i, warm, total))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def _read_checkpoint_state(path: Path) -> dict | None:
    """The flow-matching state of a Lightning checkpoint, or None if it has none or cannot be read."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - an unreadable checkpoint means starting afresh
        log.warning("cannot read checkpoint %s (%s): starting afresh", path, e)
        return None
    return ckpt.get("flow_matching")


def fit_velocity(net: torch.nn.Module, train: FlowData, val: FlowData, settings: dict, seed: int, workdir,
                 trainer_kwargs: dict | None = None, name: str = "flow", fingerprint: dict | None = None):
    """Train ``net`` by flow matching; returns (EMA net of the best epoch on the CPU in eval mode, history).

    ``settings`` are a complete model settings dict (see :func:`settings_with_defaults`).
    The Trainer's devices come from :func:`resonant.train.distributed.cluster_from_env`,
    overridden by ``trainer_kwargs`` (whose ``callbacks`` are added to this function's).
    Under DDP the global batch of ``batch_size`` examples is split between the processes.
    Checkpoints go to ``workdir/checkpoints`` (``best.ckpt``, ``last.ckpt``). If
    ``last.ckpt`` exists and was written for the same ``fingerprint`` (settings, seed,
    data), the training resumes from it -- or, if that training had finished, is not run
    again; otherwise it starts afresh and overwrites the checkpoints.
    """
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, WeightAveraging

    from .train.distributed import cluster_from_env

    s = dict(settings)
    seed = int(seed)
    if seed < 0:
        raise ValueError(f"the seed must be >= 0, got {seed}")
    if len(train) < 1 or len(val) < 1:
        raise ValueError(f"{name}: need training and validation examples (got {len(train)} and {len(val)})")
    fingerprint = jsonable({"name": name, "settings": s, "seed": seed, "n_train": len(train), "n_val": len(val),
                             **dict(fingerprint or {})})
    ckpt_dir = Path(workdir) / "checkpoints"
    L.seed_everything(seed, workers=True, verbose=False)
    early = EarlyStopping(monitor="val_loss", mode="min", patience=int(s["patience"]), check_finite=False)
    checkpoints = ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor="val_loss", mode="min", save_top_k=1,
                                  save_on_train_epoch_end=True, enable_version_counter=False)
    # every epoch (ModelCheckpoint's own save_last only follows improvements of the monitored loss)
    latest = ModelCheckpoint(dirpath=ckpt_dir, filename="last", monitor=None, save_top_k=1,
                             save_on_train_epoch_end=True, enable_version_counter=False)
    ema = WeightAveraging(multi_avg_fn=ema_multi_avg_fn(s["ema_decay"]), use_buffers=True)
    kwargs = {**cluster_from_env(), **dict(trainer_kwargs or {})}
    callbacks = [ema, early, checkpoints, latest, *kwargs.pop("callbacks", [])]
    trainer = L.Trainer(**{"max_epochs": int(s["epochs"]), "deterministic": True, "enable_progress_bar": False,
                           "enable_model_summary": False, "logger": False, "num_sanity_val_steps": 0,
                           "use_distributed_sampler": False, "default_root_dir": str(workdir),
                           "gradient_clip_val": float(s["grad_clip"]), "gradient_clip_algorithm": "norm",
                           **kwargs}, callbacks=callbacks)
    steps = len(KeyedBatches(len(train), s["batch_size"], seed, 0, trainer.world_size))
    module = FlowMatchingModule(net, s, steps_per_epoch=steps, name=name, fingerprint=fingerprint)

    last, best_path = ckpt_dir / "last.ckpt", ckpt_dir / "best.ckpt"
    state = _read_checkpoint_state(last) if last.exists() else None
    resume = None
    if state is not None and state.get("fingerprint") == fingerprint:
        resume = last
    elif state is not None:
        log.warning("%s: %s was written for other settings, seed or data: training afresh", name, last)
    t0 = time.perf_counter()
    if resume is not None and state.get("finished") and best_path.exists():
        log.info("%s: the training in %s has finished; using its best checkpoint", name, ckpt_dir)
        module.history = {k: list(v) for k, v in state["history"].items()}
    else:
        if resume is not None:
            log.info("%s: resuming from %s", name, resume)
        trainer.fit(module, datamodule=_FlowDataModule(train, val, int(s["batch_size"]), seed),
                    ckpt_path=str(resume) if resume is not None else None)
        best_path = Path(checkpoints.best_model_path) if checkpoints.best_model_path else best_path
    history = dict(module.history)
    best_epoch = int(history["epoch"][int(np.nanargmin(history["val_loss"]))]) if history["val_loss"] else -1
    if best_path.exists():
        ckpt = torch.load(best_path, map_location="cpu", weights_only=False)
        module.load_state_dict(ckpt["state_dict"])  # the EMA weights (WeightAveraging puts them there)
        best_epoch = int(ckpt.get("epoch", best_epoch))
    history.update(best_epoch=best_epoch, epochs_run=len(history["train_loss"]), seed=seed,
                   world_size=trainer.world_size, steps_per_epoch=steps, call_seconds=time.perf_counter() - t0,
                   train_seconds=float(sum(history["epoch_time"])),
                   n_parameters=sum(p.numel() for p in module.net.parameters()))
    return module.net.cpu().eval(), history


# --------------------------------------------------------------------------------------------- models

def make_net(kind: str, settings: dict) -> torch.nn.Module:
    """The velocity network of ``kind`` ("jet_model" or "particle_model") for complete ``settings``."""
    if kind == "jet_model":
        return MLPVelocity(N_JET_FEATURES, 1, hidden=settings["hidden"], layers=settings["layers"])
    if kind == "particle_model":
        return EPiCVelocity(len(PARTICLE_FIELDS), N_PARTICLE_CONDITION, hidden=settings["hidden"],
                            global_dim=settings["global_dim"], layers=settings["layers"])
    raise ValueError(f"unknown model kind {kind!r}")


def _device(device) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class _Flow(GeneratorModel):
    """A flow-matching model: integrates its velocity field with torchdiffeq; saved with torch."""

    family = "flow_matching"
    default_steps = DEFAULTS["sampling"]["steps"]
    checked = staticmethod(settings_with_defaults)

    @torch.no_grad()
    def _integrate(self, z, cond, mask, steps, device=None):
        """``steps`` midpoint steps from noise ``z`` (B, T, F) on ``device`` (default: a GPU if there is one)."""
        device = _device(device)
        net = self.net.to(device).eval()
        x0, c = torch.from_numpy(z).to(device), torch.from_numpy(cond).to(device)
        if self.kind == "jet_model":  # an MLP on both jets' features as one vector
            x0, m = x0.reshape(len(z), -1), None
        else:
            m = torch.from_numpy(mask > 0).to(device)
        x = integrate(lambda t, x: net(x, t, c, m), x0, steps)
        return x.cpu().numpy().reshape(z.shape)

    def save(self, path) -> None:
        """``path`` (torch: weights, settings, transforms) and ``path.with_suffix('.json')`` (settings, history)."""
        path = Path(path)
        payload = {"format": _FORMAT, **self.header(),
                   "state_dict": {k: v.detach().cpu() for k, v in self.net.state_dict().items()}}
        with io.atomic_path(path, suffix=".tmp.pt") as tmp:
            torch.save(payload, tmp)
        io.write_json(self.summary(sum(p.numel() for p in self.net.parameters())), path.with_suffix(".json"))


class JetFlow(_Flow, JetModel):
    """The jet model: a CNF of both jets' (pt, eta, phi, m, n) given m_jj (an MLP velocity)."""


class ParticleFlow(_Flow, ParticleModel):
    """The particle model: a CNF of each jet's constituents given the jet and m_jj (an EPiC velocity)."""


def load(path) -> JetFlow | ParticleFlow:
    """The :class:`JetFlow` or :class:`ParticleFlow` saved at ``path`` (networks on the CPU in eval mode)."""
    def read(p):
        payload = torch.load(p, map_location="cpu", weights_only=True)
        return payload, payload

    kind, payload, _ = read_saved(path, "flow-matching", read, _FORMAT)
    payload["settings"] = settings_with_defaults(kind, payload["settings"])
    net = make_net(kind, payload["settings"])
    net.load_state_dict(payload["state_dict"])
    return from_header(path, payload, net.eval(), (JetFlow, ParticleFlow))


# --------------------------------------------------------------------------------------------- verbs


def train_jet_model(train: PointCloud, val: PointCloud, settings: dict | None, seed: int, workdir,
                    trainer_kwargs: dict | None = None, transform: JetTransform | None = None):
    """Train the jet model; returns (:class:`JetFlow`, history).

    ``transform`` defaults to a :class:`JetTransform` fitted on ``train``. See
    :func:`fit_velocity` for checkpoints, resumption and devices. Every process of a DDP
    run returns the model; only global rank zero should save it.
    """
    s = settings_with_defaults("jet_model", settings)
    transform = jet_training_transforms(train, val, transform)
    L.seed_everything(int(seed), workers=True, verbose=False)
    net = make_net("jet_model", s)
    net, history = fit_velocity(net, JetData(train, transform), JetData(val, transform), s, seed, workdir,
                                trainer_kwargs, name="jet model", fingerprint=data_fingerprint(train, val))
    return JetFlow(net, transform, s, history), history


def train_particle_model(train: PointCloud, val: PointCloud, settings: dict | None, seed: int, workdir,
                         trainer_kwargs: dict | None = None, jet_transform: JetTransform | None = None,
                         particle_transform: ParticleTransform | None = None):
    """Train the particle model on the 2N jets of N events; returns (:class:`ParticleFlow`, history).

    The transforms default to ones fitted on ``train``. The model's ``max_particles`` is
    that of ``train``. See :func:`fit_velocity` for checkpoints, resumption and devices.
    """
    s = settings_with_defaults("particle_model", settings)
    jet_transform, particle_transform = particle_training_transforms(train, val, jet_transform, particle_transform,
                                                                     s["pt_rel"])
    L.seed_everything(int(seed), workers=True, verbose=False)
    net = make_net("particle_model", s)
    net, history = fit_velocity(net, ParticleData(train, jet_transform, particle_transform),
                                ParticleData(val, jet_transform, particle_transform), s, seed, workdir,
                                trainer_kwargs, name="particle model", fingerprint=data_fingerprint(train, val))
    return ParticleFlow(net, jet_transform, particle_transform, s, train.max_particles, history), history


def generate(jet_flow: JetFlow, particle_flow: ParticleFlow, mjj, max_particles: int, steps: int = 250,
             batch_size: int = 4096, seed: int = 0, writer=None, device=None) -> dict:
    """:func:`resonant.generative.generate` with the flow-matching models, integrated on ``device``."""
    return generative.generate(jet_flow, particle_flow, mjj, max_particles, steps, batch_size, seed, writer,
                               device=device)


# --------------------------------------------------------------------------------------------- workflow

MODELS = (JetFlow, ParticleFlow)


def configure(threads: int) -> None:
    """Torch's thread count (call before any work)."""
    torch.set_num_threads(max(1, int(threads)))


def train(part: str, train: PointCloud, val: PointCloud, params: dict, seed: int, workdir):
    """(model, writes?) of the workflow's training stage: ``part`` is "jet_model" or "particle_model".

    Started by srun on SLURM, each task is a DDP worker; only global rank zero writes.
    """
    from .train.distributed import is_global_zero

    fit = train_jet_model if part == "jet_model" else train_particle_model
    model, _ = fit(train, val, params[part], seed=seed, workdir=workdir)
    return model, is_global_zero()

