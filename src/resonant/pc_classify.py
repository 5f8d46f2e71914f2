"""Weakly supervised point-cloud classifier of the full-phase-space branches.

Both full-phase-space generators (flow matching and diffusion) plug into it:
SR data (label 1) against generated SR background (label 0) -- or against true
SR background for the idealised detector -- with the transformer of
:mod:`resonant.models.pc_classifier`. The score of an event is the classifier
output; an ensemble of ``n_ensemble`` classifiers with different seeds gives
the median and band of the figures of merit. :func:`fidelity_auc` is the
quality check of a generator: the AUC of a classifier of generated against true
background on events it did not train on (0.5 for a perfect generator).

Network inputs (:class:`ClassifierInputs`, fitted on each classifier's own
training events, both classes, and stored with the model):

- jets, 5 per jet: :class:`~resonant.pointcloud.JetTransform`
  (log pT/m_jj, eta, phi, log m/m_jj, n; standardised, shared by both jets);
- particles, 5 per constituent: :class:`~resonant.pointcloud.ParticleTransform`
  (log(1 - pT_rel), deta, dphi; standardised) plus log pT_rel and log dR
  (dR = hypot(deta, dphi), the distance to the jet axis), standardised over the
  real constituents. log(1 - pT_rel) is nearly linear in pT_rel and squeezes
  the soft constituents together, log pT_rel resolves them; log dR makes
  prong structures (two hard clusters away from the axis) easy to see.

m_jj itself is never an input (pT and m enter as ratios to m_jj, which carry no
scale): in the SR both classes share the m_jj distribution and the classifier
must not learn it.

Memory stays bounded at the published size (279 constituents per jet, a few
hundred thousand events): training never concatenates the two classes, features
are computed per batch, and forward passes without gradients run in chunks sized
from the number of constituent slots.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from . import io, seeds
from .errors import InputError
from .models.bdt import balanced_weights
from .models.pc_classifier import PCTransformer
from .pointcloud import JET_FIELDS, PARTICLE_FIELDS, JetTransform, ParticleTransform, PointCloud, check_finite
from .train import loop

log = logging.getLogger(__name__)

DEFAULTS = {
    "dim": 64, "heads": 2, "blocks": 4, "dropout": 0.1, "lr": 1e-4, "batch_size": 64, "epochs": 100,
    "patience": 20, "val_fraction": 0.2, "n_ensemble": 10,
}
ARCHITECTURE = ("dim", "heads", "blocks", "dropout")
POSITIVE, NEGATIVE = "positive (SR data)", "negative (background)"

# Chunks of a forward pass without gradients: at most this many tokens and attention-matrix entries.
TOKEN_BUDGET = 2**16
ATTENTION_BUDGET = 2**25


def settings_with_defaults(settings: dict | None) -> dict:
    """``DEFAULTS`` updated by ``settings``; unknown keys or invalid values raise ``ValueError``."""
    settings = dict(settings or {})
    unknown = sorted(set(settings) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown point-cloud classifier setting(s) {', '.join(unknown)} "
                         f"(allowed: {', '.join(DEFAULTS)})")
    s = {**DEFAULTS, **settings}
    for key in ("dim", "heads", "blocks", "batch_size", "epochs", "patience", "n_ensemble"):
        if not isinstance(s[key], (int, np.integer)) or isinstance(s[key], bool) or s[key] < 1:
            raise ValueError(f"point-cloud classifier setting {key} must be an integer >= 1, got {s[key]!r}")
    if s["dim"] % s["heads"]:
        raise ValueError(f"point-cloud classifier setting dim ({s['dim']}) must be a multiple of heads ({s['heads']})")
    if not 0 <= s["dropout"] < 1:
        raise ValueError(f"point-cloud classifier setting dropout must be in [0, 1), got {s['dropout']!r}")
    if not 0 < s["val_fraction"] < 1:
        raise ValueError(f"point-cloud classifier setting val_fraction must be in (0, 1), got {s['val_fraction']!r}")
    if not s["lr"] > 0:
        raise ValueError(f"point-cloud classifier setting lr must be > 0, got {s['lr']!r}")
    return s


# --------------------------------------------------------------------------------------------- inputs

class ClassifierInputs:
    """The network inputs of events (see the module docstring): fitted transforms, ``to_dict``/``from_dict``."""

    JET_FEATURES = ("log pt/mjj", "eta", "phi", "log m/mjj", "n")
    PARTICLE_FEATURES = ("log(1-pt_rel)", "deta", "dphi", "log pt_rel", "log dR")
    PT_REL_FLOOR = 1e-6
    DR_FLOOR = 1e-4
    FIT_EVENTS = 20_000  # the particle statistics are fitted on at most this many events

    def __init__(self):
        self.jet = JetTransform()
        self.particle = ParticleTransform()
        self.extra_mean = self.extra_std = None

    @classmethod
    def _extra_raw(cls, particles) -> np.ndarray:
        """(..., 2): log pT_rel and log dR before standardisation."""
        p = np.asarray(particles, np.float64)
        return np.stack([np.log(np.maximum(p[..., 0], cls.PT_REL_FLOOR)),
                         np.log(np.maximum(np.hypot(p[..., 1], p[..., 2]), cls.DR_FLOOR))], axis=-1)

    def fit(self, jets, mjj, particles, mask) -> "ClassifierInputs":
        """Fit the jet statistics on ``jets``/``mjj`` and the particle ones on ``particles``/``mask``."""
        self.jet.fit(jets, mjj)
        self.particle.fit(particles, mask)
        extra = self._extra_raw(particles)[np.asarray(mask, bool)]
        self.extra_mean = extra.mean(0)
        self.extra_std = np.where(extra.std(0) > 0, extra.std(0), 1.0)
        return self

    def __call__(self, jets, particles, mask, mjj) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Tensors (jets (B, 2, 5), particles (B, 2, P, 5), mask (B, 2, P)); padded constituents are 0."""
        mask = np.asarray(mask, bool)
        extra = np.where(mask[..., None], (self._extra_raw(particles) - self.extra_mean) / self.extra_std, 0.0)
        parts = np.concatenate([self.particle.transform(particles, mask), extra.astype(np.float32)], axis=-1)
        return (torch.from_numpy(self.jet.transform(jets, mjj)), torch.from_numpy(parts),
                torch.from_numpy(np.ascontiguousarray(mask)))

    def to_dict(self) -> dict:
        return {"jet": self.jet.to_dict(), "particle": self.particle.to_dict(),
                "extra_mean": self.extra_mean.tolist(), "extra_std": self.extra_std.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "ClassifierInputs":
        self = cls()
        self.jet, self.particle = JetTransform.from_dict(d["jet"]), ParticleTransform.from_dict(d["particle"])
        self.extra_mean, self.extra_std = np.asarray(d["extra_mean"]), np.asarray(d["extra_std"])
        return self


def make_net(settings: dict) -> PCTransformer:
    """The untrained transformer of ``settings`` (missing keys take the defaults)."""
    s = {**DEFAULTS, **settings}
    return PCTransformer(len(ClassifierInputs.JET_FEATURES), len(ClassifierInputs.PARTICLE_FEATURES),
                         **{k: s[k] for k in ARCHITECTURE})


def chunk_events(max_particles: int, heads: int) -> int:
    """Events per forward pass without gradients, bounding the tokens and attention entries held at once."""
    p = max(int(max_particles), 1)
    return max(1, min(TOKEN_BUDGET // (2 * p + 2), ATTENTION_BUDGET // (2 * heads * p * p)))


def _logits(net: PCTransformer, jets, particles, mask, chunk: int) -> torch.Tensor:
    """The network's logits (on its device), evaluated ``chunk`` events at a time."""
    dev = next(net.parameters()).device
    return torch.cat([net(*(t[i:i + chunk].to(dev) for t in (jets, particles, mask)))
                      for i in range(0, len(jets), chunk)])


def by_multiplicity(mask: np.ndarray) -> np.ndarray:
    """Event order by the larger constituent count of the two jets (stable).

    Batches of consecutive events then need few padded slots: the passes without
    gradients (validation, prediction) run in this order.
    """
    return np.argsort(np.asarray(mask).sum(-1).max(-1), kind="stable")


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# --------------------------------------------------------------------------------------------- checks

def _check_cloud(cloud, what: str, allow_empty: bool = False) -> None:
    """Type, shapes and finiteness of one input; errors name ``what``."""
    if not isinstance(cloud, PointCloud):
        raise TypeError(f"{what}: expected a PointCloud, got {type(cloud).__name__}")
    n = len(cloud)
    if n == 0 and not allow_empty:
        raise InputError(what, "has no events", "check the selection and the files feeding the classifier")
    p = cloud.particles.shape[2] if np.ndim(cloud.particles) == 4 else None
    shapes = {"jets": (n, 2, len(JET_FIELDS)), "particles": (n, 2, p, len(PARTICLE_FIELDS)), "mask": (n, 2, p),
              "mjj": (n,)}
    for name, shape in shapes.items():
        if np.shape(getattr(cloud, name)) != shape:
            expected = "(" + ", ".join("P" if d is None else str(d) for d in shape) + ")"
            raise InputError(what, f"{name} has shape {np.shape(getattr(cloud, name))}, expected {expected}",
                             "build the events with resonant.pointcloud", field=name)
    # fast exact test (a float64 sum of float32 values cannot overflow); the slow one names the field
    if not all(np.isfinite(np.sum(getattr(cloud, k), dtype=np.float64)) for k in ("jets", "particles", "mjj")):
        check_finite(cloud, what)
    for field, values in (("mjj", cloud.mjj), ("jets (pt)", cloud.jets[..., JET_FIELDS.index("pt")])):
        if n and not np.all(values > 0):
            raise InputError(what, f"{int(np.sum(values <= 0))} value(s) of {field} are not positive",
                             "repair or remove those events at the source", field=field.split()[0])


def _check_pair(a: PointCloud, b: PointCloud, names: tuple[str, str], min_events: int) -> None:
    """Both inputs valid, with at least ``min_events`` events each and the same constituent slots."""
    for cloud, what in zip((a, b), names):
        _check_cloud(cloud, what)
        if len(cloud) < min_events:
            raise InputError(what, f"has {len(cloud)} event(s), at least {min_events} are needed",
                             "provide more events")
    if a.max_particles != b.max_particles:
        raise ValueError(f"the {names[0]} events have {a.max_particles} constituent slots per jet but the "
                         f"{names[1]} events {b.max_particles}: the classifier would see the padding -- fix: "
                         "use the same pointcloud.max_particles for both")


def _split(n: int, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random (rest, part) of ``range(n)`` with ``part`` round(fraction * n) long, each at least 1, sorted."""
    perm = rng.permutation(n)
    k = min(max(int(round(fraction * n)), 1), n - 1)
    return np.sort(perm[k:]), np.sort(perm[:k])


# --------------------------------------------------------------------------------------------- data

class _Pool:
    """Several PointClouds addressed as one by global row numbers, without concatenating them."""

    def __init__(self, clouds: list[PointCloud]):
        self.clouds = clouds
        self.bounds = np.cumsum([0] + [len(c) for c in clouds])

    def gather(self, name: str, rows: np.ndarray) -> np.ndarray:
        """Field ``name`` of the events at global ``rows``, in that order."""
        arrays = [getattr(c, name) for c in self.clouds]
        out = np.empty((len(rows), *arrays[0].shape[1:]), np.result_type(*arrays))
        for a, lo, hi in zip(arrays, self.bounds[:-1], self.bounds[1:]):
            sel = (rows >= lo) & (rows < hi)
            out[sel] = a[rows[sel] - lo]
        return out


@dataclass
class _Batch:
    jets: torch.Tensor
    particles: torch.Tensor
    mask: torch.Tensor
    y: torch.Tensor
    w: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)


class _LabelledEvents:
    """Events of a pool with labels and weights; ``view[idx]`` (indices or a slice) is a :class:`_Batch`.

    It is what :func:`resonant.train.loop.fit` indexes in place of a tensor: the
    network inputs are computed per batch.
    """

    def __init__(self, pool: _Pool, rows: np.ndarray, y: np.ndarray, inputs: ClassifierInputs):
        self.pool, self.rows, self.inputs = pool, rows, inputs
        self.y = torch.as_tensor(y, dtype=torch.float32)
        self.w = torch.as_tensor(balanced_weights(y))

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, idx) -> _Batch:
        if torch.is_tensor(idx):
            idx = idx.numpy()
        rows = self.rows[idx]
        x = self.inputs(*(self.pool.gather(k, rows) for k in ("jets", "particles", "mask", "mjj")))
        return _Batch(*x, self.y[idx], self.w[idx])


# --------------------------------------------------------------------------------------------- model

class PCClassifier:
    """A trained point-cloud classifier: the network, its input transforms, settings and history."""

    def __init__(self, net: PCTransformer, inputs: ClassifierInputs, settings: dict, history: dict | None = None):
        self.net = net.eval()  # on any device: predict moves the inputs to it
        self.inputs = inputs
        self.settings = settings_with_defaults(settings)
        self.history = dict(history or {})

    @torch.no_grad()
    def predict(self, cloud: PointCloud, batch_size: int | None = None) -> np.ndarray:
        """P(label 1) of every event (float64, (N,)); ``batch_size`` None sizes batches from the constituent slots.

        Events run in :func:`by_multiplicity` order; the result is in the input order.
        """
        _check_cloud(cloud, "input", allow_empty=True)
        chunk = chunk_events(cloud.max_particles, self.settings["heads"])
        batch_size = int(batch_size or chunk)
        self.net.eval()
        order = by_multiplicity(cloud.mask)
        out = np.empty(len(cloud))
        for i in range(0, len(cloud), batch_size):
            idx = order[i:i + batch_size]
            x = self.inputs(cloud.jets[idx], cloud.particles[idx], cloud.mask[idx], cloud.mjj[idx])
            out[idx] = torch.sigmoid(_logits(self.net, *x, chunk)).double().cpu().numpy()
        return out

    def save(self, path) -> None:
        """``path`` (.pt: weights, settings, input transforms, history) and ``path`` with suffix .json beside it."""
        path = Path(path)
        payload = {"state_dict": {k: v.detach().cpu() for k, v in self.net.state_dict().items()},
                   "settings": self.settings, "inputs": self.inputs.to_dict(),
                   "history": self.history}
        with io.atomic_path(path, suffix=".tmp.pt") as tmp:
            torch.save(payload, tmp)
        io.write_json({"settings": self.settings, "history": self.history, "inputs": payload["inputs"],
                       "jet_features": ClassifierInputs.JET_FEATURES,
                       "particle_features": ClassifierInputs.PARTICLE_FEATURES}, path.with_suffix(".json"))

    @classmethod
    def load(cls, path, device=None) -> "PCClassifier":
        """The classifier saved at ``path``, on ``device`` (CPU by default)."""
        path = Path(path)
        if not path.exists():
            raise InputError(path, "file does not exist", "run the classifier training that produces it")
        payload = torch.load(path, map_location="cpu", weights_only=True)
        net = make_net(payload["settings"])
        net.load_state_dict(payload["state_dict"])
        net.to(device or "cpu")
        return cls(net, ClassifierInputs.from_dict(payload["inputs"]), payload["settings"], payload["history"])


# --------------------------------------------------------------------------------------------- training

def train_classifier(positive: PointCloud, negative: PointCloud, settings: dict | None = None, seed: int = 0,
                     name: str = "classifier", device=None) -> tuple[PCClassifier, dict]:
    """Train ``positive`` (label 1, SR data) against ``negative`` (label 0, background).

    Each class is split at random (``val_fraction``) into training and
    validation events; the classes are weighted to the same total weight; Adamax
    with early stopping on the validation loss (``patience``), keeping the best
    epoch; one log line per epoch. Deterministic for a fixed ``seed`` (on a given
    device). ``device``: where the network runs (default: CUDA if available, else
    the CPU). Returns (classifier, history).
    """
    s = settings_with_defaults(settings)
    _check_pair(positive, negative, (POSITIVE, NEGATIVE), min_events=2)
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    (pos_tr, pos_va), (neg_tr, neg_va) = (_split(len(c), s["val_fraction"], rng) for c in (positive, negative))
    pool = _Pool([positive, negative])
    n_pos = len(positive)
    train_rows, val_rows = np.r_[pos_tr, neg_tr + n_pos], np.r_[pos_va, neg_va + n_pos]
    fit_rows = np.sort(rng.choice(train_rows, min(len(train_rows), ClassifierInputs.FIT_EVENTS), replace=False))
    inputs = ClassifierInputs().fit(pool.gather("jets", train_rows), pool.gather("mjj", train_rows),
                                    pool.gather("particles", fit_rows), pool.gather("mask", fit_rows))
    val_rows = val_rows[by_multiplicity(pool.gather("mask", val_rows))]  # the order does not change the loss
    train, val = (_LabelledEvents(pool, rows, rows < n_pos, inputs) for rows in (train_rows, val_rows))
    log.info("%s: %d + %d training, %d + %d validation events (positive + negative), %d constituent slots, seed %d",
             name, len(pos_tr), len(neg_tr), len(pos_va), len(neg_va), positive.max_particles, seed)

    chunk = chunk_events(positive.max_particles, s["heads"])

    def loss_fn(net, batch: _Batch) -> torch.Tensor:
        """Class-weighted binary cross-entropy, mean over the batch."""
        logits = _logits(net, batch.jets, batch.particles, batch.mask, chunk)
        return F.binary_cross_entropy_with_logits(logits, batch.y.to(logits.device), weight=batch.w.to(logits.device))

    loop.seed_everything(seed)  # the initial weights
    net = make_net(s).to(device or default_device())
    states, hist = loop.fit(net, loss_fn, (train,), (val,), epochs=s["epochs"], batch_size=s["batch_size"],
                            lr=s["lr"], patience=s["patience"], keep_best=1, seed=seed, name=name,
                            optimizer=torch.optim.Adamax)
    net.load_state_dict(states[0])
    history = {**hist.to_dict(), "best_epoch": hist.best_epochs[0], "seed": seed,
               "n_train": {"positive": len(pos_tr), "negative": len(neg_tr)},
               "n_val": {"positive": len(pos_va), "negative": len(neg_va)},
               "seconds": time.perf_counter() - t0}
    log.info("%s: best epoch %d (val loss %.5f) of %d, %.0f s", name, history["best_epoch"],
             hist.val_loss[history["best_epoch"]], len(hist.val_loss), history["seconds"])
    return PCClassifier(net, inputs, s, history), history


def member_seeds(seed: int, n: int) -> list[int]:
    """``n`` independent seeds derived from ``seed`` (the ensemble members')."""
    return [seeds.member(seed, k) for k in range(n)]


def train_ensemble(positive: PointCloud, negative: PointCloud, settings: dict | None = None, seed: int = 0,
                   name: str = "classifier", device=None) -> list[tuple[PCClassifier, dict]]:
    """``n_ensemble`` classifiers (:func:`train_classifier`) with seeds from :func:`member_seeds`."""
    s = settings_with_defaults(settings)
    return [train_classifier(positive, negative, s, seed=k, name=f"{name}[{i}]", device=device)
            for i, k in enumerate(member_seeds(seed, s["n_ensemble"]))]


def ensemble_scores(members, cloud: PointCloud, batch_size: int | None = None) -> np.ndarray:
    """Scores (N, n_members) of ``cloud``; ``members``: classifiers or the (classifier, history) pairs."""
    models = [m[0] if isinstance(m, tuple) else m for m in members]
    if not models:
        raise ValueError("ensemble_scores: no ensemble members")
    return np.stack([m.predict(cloud, batch_size=batch_size) for m in models], axis=1)


def fidelity_auc(generated: PointCloud, true: PointCloud, settings: dict | None = None, seed: int = 0,
                 name: str = "fidelity", device=None) -> dict:
    """AUC of classifiers of ``true`` (label 1) against ``generated`` (label 0) background.

    Each sample is split at random into halves: ``n_ensemble`` classifiers
    (:func:`train_ensemble`) train and validate on the first halves, the AUC of
    their mean score is measured on the second ones, never on training events.
    0.5 means the classifiers cannot tell the generated events from the true
    ones. Returns ``{"auc", "n_train", "n_test", "n_ensemble"}`` (events of both
    samples in each half).
    """
    s = settings_with_defaults(settings)
    _check_pair(generated, true, ("generated", "true"), min_events=4)
    rng = np.random.default_rng(seed)
    (gen_tr, gen_te), (true_tr, true_te) = (_split(len(c), 0.5, rng) for c in (generated, true))
    members = train_ensemble(true.take(true_tr), generated.take(gen_tr), s, seed=seed, name=name, device=device)
    test = PointCloud.concatenate([true.take(true_te), generated.take(gen_te)])
    labels = np.r_[np.ones(len(true_te)), np.zeros(len(gen_te))]
    auc = float(roc_auc_score(labels, ensemble_scores(members, test).mean(1)))
    log.info("%s: AUC %.4f on %d held-out events (%d classifiers)", name, auc, len(labels), len(members))
    return {"auc": auc, "n_train": int(len(gen_tr) + len(true_tr)), "n_test": int(len(labels)),
            "n_ensemble": len(members)}
