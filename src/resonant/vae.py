"""Bump hunting in the latent space of a VAE (Bortolato, Dillon, Kamenik, Smolkovic).

Anomaly score
    A VAE (:class:`resonant.models.vae.VAE`) learns the jet observables
    (m_j, tau21, tau32 of the two jets ordered by mass; m_jj is never an input)
    of the whole data set: no sidebands, no labels. Training stops at the peak
    of the validation KL divergence (:func:`kl_peak`) and keeps that epoch's
    weights. The anomaly score of an event is the KL divergence of its encoding
    to the prior, averaged over an ensemble of trainings.

What the score ranks
    The KL of an event is 0.5 (z^2 + sigma^2 - 1 - log sigma^2): its distance
    from the prior's centre along the latent direction (which follows the
    dominant direction of the scaled inputs), plus a width term. The inputs are
    MaxAbs-scaled, hence all >= 0 and not centred, and the untrained networks
    map z = 0 to and from the input origin (zero biases, selu(0) = 0). Up to
    the KL peak (the training the published method keeps) the events'
    latent distribution sits off the prior's centre (median |z| ~ 2 for a
    spread of ~1), so the score is one-sided: it ranks events by their position
    along the latent direction, from the end nearest the prior's centre, and
    which end that is depends on the initialisation. Signals in a low-density
    tail far from the input origin (heavy jets) get the largest KL; a
    two-prong signal whose small tau ratios put it near the origin can get the
    smallest (the laptop W' -> XY signal: AUC ~0.1). The ensemble mean is
    dominated by the members that encode a signal far from the prior. The
    published evaluation negates scores whose AUC is below 0.5, choosing the
    direction with the truth labels; a search cannot, and nothing here does.

Rarity of the encoding (``vae_latent``)
    The same members score an event by how rare its encoding (its latent mean;
    with ``width``, also its log width) is among the data's encodings: -log of
    a kernel density of the data's encodings in robustly standardised
    coordinates
    (:class:`EncodingRarity`), so the orientation, offset and scale of a
    member's axis do not matter; each member's score is standardised on the
    data, so members of opposite orientation add instead of cancelling. On
    the laptop data the mean alone ranks better than mean and width (test AUC
    0.84 / 0.77 / 0.82 against 0.80 / 0.77 / 0.76 at 200 / 500 / 500 injected,
    seeds 1 / 0 / 1). The score is two-sided: both ends of the latent
    distribution are rare, while a signal sits at one end, so it stays below a
    one-sided score whose direction is known (the signed mean, oriented with
    the labels, AUC ~0.9, SIC at eps_S = 0.5 ~2), which a search cannot have.

Characterisation
    The encoder is frozen; a new decoder learns the observables from
    z ~ N(mean, sigma) and m ~ N(m_jj, width * m_jj) (standardised). Decoding a
    grid of (m_jj, z) shows where in the latent space and at which m_jj the
    decoder needs m_jj to reconstruct the events: a resonant signal leaves a
    localised imprint (:func:`plot_latent_map`). Marginals <O>_z(m_jj) / <O>
    of background-only subsets give bands that a signal must leave
    (:func:`marginal_deviations`, :func:`plot_marginals`).

Truth labels are never read for training: the tables given to the training
functions may lack the ``label`` column; labels enter only the scores
contract and the figures' signal/background contours.
"""

from __future__ import annotations

import copy
import logging
import math
import time
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa

from . import io, seeds
from .errors import InputError, PhysicsWarning
from .features import high_level
from .regions import select_split

log = logging.getLogger(__name__)

INPUTS = ("mj1", "mj2", "tau21_j1", "tau21_j2", "tau32_j1", "tau32_j2")
JET_COLUMNS = tuple(f"{j}_{f}" for j in ("j1", "j2") for f in ("m", "tau1", "tau2", "tau3"))
TRAIN_COLUMNS = (*JET_COLUMNS, "mjj", "split")  # all that training reads: no label, no event_id
LABELS = {
    "mj1": r"$m_{j}$ lighter [GeV]", "mj2": r"$m_{j}$ heavier [GeV]",
    "tau21_j1": r"$\tau_{21}$ lighter", "tau21_j2": r"$\tau_{21}$ heavier",
    "tau32_j1": r"$\tau_{32}$ lighter", "tau32_j2": r"$\tau_{32}$ heavier",
}

DEFAULTS = {
    "latent_dim": 1, "alpha": 5000.0, "hidden": 64, "layers": 3, "batch_size": 1000, "epochs": 100,
    "steps_per_epoch": 100, "rise": 5, "fall": 5, "n_ensemble": 20, "lr": 0.01,
    "characterisation": {
        "epochs": 100, "lr": 1e-3, "batch_size": 1000, "patience": 10, "mass_width": 0.025,
        "n_subsets": 10, "subset_fraction": 0.9, "grid": {"n_z": 40, "n_mjj": 54},
    },
}
MJJ_QUANTILES = (0.01, 0.99)  # the m_jj range of the characterisation scans (see scan_range)


def settings(params: dict | None = None) -> dict:
    """The VAE settings: ``DEFAULTS`` updated with the known keys of ``params`` (others are ignored)."""

    def merge(base, new):
        out = copy.deepcopy(base)
        for k, v in (new or {}).items():
            if k in out:
                out[k] = merge(out[k], v) if isinstance(out[k], dict) else v
        return out

    return merge(DEFAULTS, params)


# ---------------------------------------------------------------- inputs
def read_sets(paths, columns=TRAIN_COLUMNS) -> pa.Table:
    """The rows of several study-set files (e.g. sb.parquet and sr.parquet), only ``columns``."""
    tables = [io.read_table(p, columns=list(columns), required=list(columns)) for p in paths]
    return pa.concat_tables(tables) if len(tables) > 1 else tables[0]


def inputs(table: pa.Table, source="table") -> np.ndarray:
    """The VAE inputs (N, 6) in the order of ``INPUTS``; non-finite values are an error."""
    X = high_level(table, list(INPUTS), source=source)
    bad = ~np.isfinite(X)
    if bad.any():
        names = [INPUTS[j] for j in np.flatnonzero(bad.any(axis=0))]
        raise InputError(source, f"{int(bad.any(axis=1).sum())} event(s) with non-finite {', '.join(names)}",
                         "check the jet masses and N-subjettiness values of the selection", field=names[0])
    return X


def train_val(table: pa.Table, source="table") -> tuple[np.ndarray, np.ndarray]:
    """(X_train, X_val) by the ``split`` column."""
    X, Xv = (inputs(select_split(table, s), source) for s in ("train", "val"))
    if len(X) == 0 or len(Xv) == 0:
        raise InputError(source, f"needs train and val events (has {len(X)} and {len(Xv)})",
                         "rebuild the study sets with a val_fraction in (0, 1)", field="split")
    return X, Xv


# ---------------------------------------------------------------- early stopping
def kl_peak(kl, rise: int = 5, fall: int = 5) -> int | None:
    """The epoch of the first KL peak, or None if there is none yet.

    A peak is an epoch p whose value was reached by ``rise`` consecutive
    increases (kl[p-rise] < ... < kl[p]) and is followed by ``fall``
    consecutive decreases (kl[p] > ... > kl[p+fall]). Non-finite values break
    both runs. ``kl`` holds one validation value per epoch; the result indexes it.
    """
    kl = np.asarray(kl, np.float64)
    if rise < 1 or fall < 1:
        raise ValueError(f"rise and fall must be >= 1 (got {rise}, {fall})")
    d = np.diff(kl)  # d[i] = kl[i+1] - kl[i]; NaN comparisons are False
    up, down = d > 0, d < 0
    for p in range(rise, len(kl) - fall):
        if up[p - rise:p].all() and down[p:p + fall].all():
            return p
    return None


def _keras():
    from .models import vae as mv  # noqa: F401  (sets KERAS_BACKEND before keras is imported)
    import keras

    return keras


# ---------------------------------------------------------------- anomaly score
def member_seed(seed: int, k: int) -> int:
    return seeds.member(seed, k)


def train_member(X: np.ndarray, X_val: np.ndarray, s: dict, seed: int, name: str = "vae"):
    """One VAE trained with KL-peak early stopping: (model, history).

    Adadelta with learning rate ``lr``; an epoch is ``steps_per_epoch``
    optimizer steps on batches of ``batch_size`` (None: one pass over ``X``),
    after which the validation KL is computed and one line logged. The
    published training (TensorFlow 2.3 Adadelta, learning rate 0.001, batch
    1000 on ~1M events: ~1000 steps per epoch) is what the defaults keep:
    at small rates Adadelta's steps are proportional to the rate (its
    accumulated updates stay below epsilon), so 100 steps at 0.01 move the
    weights about as far as 1000 at 0.001, whatever the size of the data set.
    An epoch of one pass over ~20k events would be 21 steps: at 0.001 the KL
    peaks only after hundreds of epochs; at 0.05 (an epoch's worth in 21
    steps) a step-to-step oscillation shows in the validation KL and the
    rise/fall rule of :func:`kl_peak` rarely holds; at 1.0 it never did.

    The weights of every epoch are kept until the end, then those of the KL
    peak are restored; without a peak in ``epochs`` epochs, those of the epoch
    with the largest validation KL (with a warning). ``history`` holds
    per-epoch lists (loss, mse, kl and their ``val_`` versions, seconds),
    ``selected_epoch`` (an index into them), ``peak_found``, the optimizer
    steps per epoch and the fitted ``scaler``.
    """
    keras = _keras()
    from .models.vae import VAE, epoch_runner, seed_all

    s = settings(s)
    seed_all(seed)
    X, X_val = np.asarray(X, np.float32), np.asarray(X_val, np.float32)
    model = VAE(X.shape[1], latent_dim=s["latent_dim"], hidden=s["hidden"], layers=s["layers"], alpha=s["alpha"],
                seed=seed)
    model.scaling.fit(X)
    model.compile(optimizer=keras.optimizers.Adadelta(learning_rate=s["lr"]))
    run = epoch_runner(model, X.shape[1])
    steps = s["steps_per_epoch"]
    steps_per_epoch = int(steps) if steps else math.ceil(len(X) / s["batch_size"])
    rng = np.random.default_rng([int(seed), 7])
    keys = ("loss", "mse", "kl", "val_loss", "val_mse", "val_kl", "seconds")
    hist = {k: [] for k in keys}
    weights, peak = [], None
    t0 = time.perf_counter()
    for epoch in range(s["epochs"]):
        t = time.perf_counter()
        logs = run((X,), s["batch_size"], rng, steps)
        mse, kl = model.loss_terms_numpy(X_val)
        logs.update(val_loss=float(np.mean(model.alpha * mse + kl)), val_mse=float(mse.mean()),
                    val_kl=float(kl.mean()), seconds=time.perf_counter() - t)
        for k in keys:
            hist[k].append(logs[k])
        weights.append(model.get_weights())
        log.info("%s epoch %d/%d: loss %.4g (mse %.3g, kl %.4g), val loss %.4g (mse %.3g, kl %.4g), %.2f s",
                 name, epoch + 1, s["epochs"], *(logs[k] for k in keys))
        if not (math.isfinite(logs["loss"]) and math.isfinite(logs["val_kl"])):
            warnings.warn(f"{name}: non-finite loss at epoch {epoch + 1}; training stopped", PhysicsWarning,
                          stacklevel=2)
            break
        peak = kl_peak(hist["val_kl"], s["rise"], s["fall"])
        if peak is not None:
            log.info("%s: validation KL peak at epoch %d (%.4g); stopping", name, peak + 1, hist["val_kl"][peak])
            break
    if peak is not None:
        selected = peak
    else:
        val_kl, loss = np.asarray(hist["val_kl"]), np.asarray(hist["loss"])
        finite = np.flatnonzero(np.isfinite(val_kl) & np.isfinite(loss))
        if len(finite) == 0:
            raise FloatingPointError(f"{name}: no epoch with a finite loss")
        selected = int(finite[np.argmax(val_kl[finite])])
        log.warning("%s: no validation KL peak (%d rising then %d falling epochs) in %d epochs; keeping epoch %d "
                    "of the largest validation KL (%.4g)", name, s["rise"], s["fall"], len(loss), selected + 1,
                    val_kl[selected])
    model.set_weights(weights[selected])
    history = {**hist, "selected_epoch": selected, "peak_found": peak is not None, "epochs_run": len(hist["loss"]),
               "steps_per_epoch": steps_per_epoch, "n_train": len(X), "n_val": len(X_val),
               "scaler": model.scaling.values.tolist(), "train_seconds": time.perf_counter() - t0}
    return model, history


def train_ensemble(table: pa.Table, s: dict, seed: int, source="table") -> list:
    """``n_ensemble`` VAEs on the train/val splits of ``table``: a list of (model, history, seed)."""
    s = settings(s)
    X, Xv = train_val(table, source)
    log.info("VAE inputs %s: %d train, %d val events", ", ".join(INPUTS), len(X), len(Xv))
    out = []
    for k in range(s["n_ensemble"]):
        sd = member_seed(seed, k)
        model, hist = train_member(X, Xv, s, sd, name=f"vae member {k + 1}/{s['n_ensemble']}")
        out.append((model, hist, sd))
    return out


def kl_scores(models, X: np.ndarray) -> list[np.ndarray]:
    """Per-event KL of every model: the ensemble's member scores."""
    return [m.kl_numpy(X) for m in models]


def save_member(model, history: dict, path, meta: dict | None = None) -> None:
    """The model (.keras, scaler included) and, beside it, a JSON of its config and training history."""
    path = Path(path)
    with io.atomic_path(path, suffix=".tmp.keras") as tmp:
        model.save(tmp)
    io.write_json({"config": model.get_config(), "inputs": list(INPUTS), "history": history, **(meta or {})},
                  path.with_suffix(".json"))


def load_member(path):
    """A saved VAE (.keras), ready to score raw inputs."""
    keras = _keras()
    path = Path(path)
    if not path.exists():
        raise InputError(path, "model file does not exist", "run the vae_train stage")
    return keras.models.load_model(path, compile=False)


def load_ensemble(models_dir) -> tuple[list, list[dict]]:
    """The members saved by the vae_train stage in ``models_dir`` (member_NN.keras, in order) and their JSONs
    (config, training history, seed)."""
    models_dir = Path(models_dir)
    paths = sorted(models_dir.glob("member_*.keras"))
    if not paths:
        raise InputError(models_dir, "holds no member_NN.keras", "run the vae_train stage")
    return [load_member(p) for p in paths], [io.read_json(p.with_suffix(".json")) for p in paths]


# ---------------------------------------------------------------- rarity of the encoding (vae_latent)
LATENT_DEFAULTS = {"width": False, "bandwidth": None, "n_reference": 20000}
_CHUNK_CELLS = 4_000_000  # points x reference events per block of the density sums (~32 MB)


def latent_settings(params: dict | None = None) -> dict:
    """The settings of the encoding-rarity score: ``LATENT_DEFAULTS`` updated with the known keys of ``params``."""
    return {**LATENT_DEFAULTS, **{k: v for k, v in (params or {}).items() if k in LATENT_DEFAULTS}}


def encodings(model, X: np.ndarray, width: bool = False) -> np.ndarray:
    """The encoding of each event: its latent means and, with ``width``, its latent log widths (log sigma):
    (N, latent_dim) or (N, 2 latent_dim)."""
    mean, log_var = model.encode_numpy(X)
    return np.c_[mean, 0.5 * log_var] if width else mean


def _robust_scale(x: np.ndarray, axis=0) -> np.ndarray:
    """1.4826 x the median absolute deviation (the standard deviation of a gaussian), at least 1e-6."""
    med = np.median(x, axis=axis, keepdims=True)
    return np.maximum(1.4826 * np.median(np.abs(x - med), axis=axis), 1e-6)


def _spread_rows(n: int, k: int) -> np.ndarray:
    """``k`` row indices spread evenly over ``n`` rows (all of them if k >= n): a subsample without randomness."""
    if k >= n:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, k).round().astype(np.int64))


class EncodingRarity:
    """How rare an encoding is among the data's encodings: -log of its density under their aggregate posterior.

    ``fit`` takes the encodings of the data (:func:`encodings`; no labels) and
    standardises each coordinate robustly (median, 1.4826 MAD), so that the
    score does not depend on the orientation of the latent axis (z -> -z maps
    the standardised coordinates to their negatives, and distances are kept),
    nor on its offset and scale. The density is a gaussian kernel density of
    ``n_reference`` of the data's encodings (spread evenly over the rows; all
    if fewer) with the same width in every standardised coordinate,
    ``bandwidth`` or Scott's n^(-1/(d+4)). ``raw`` is -log density;
    ``score`` is the same on a scale common to all members: (raw - its median
    over the data) / its robust spread over the data, so members add on one
    scale. The data used in ``fit`` are scored leave-one-out
    (:meth:`score_fitted`): no event lends its own kernel to its density.
    """

    def __init__(self, bandwidth: float | None = None, n_reference: int = 20000):
        self.bandwidth, self.n_reference = bandwidth, int(n_reference)

    def fit(self, E: np.ndarray) -> "EncodingRarity":
        E = np.asarray(E, np.float64)
        if E.ndim != 2 or len(E) < 2 or not np.all(np.isfinite(E)):
            raise ValueError(f"EncodingRarity.fit needs >= 2 finite encodings (N, d), got shape {E.shape}")
        self.centre = np.median(E, axis=0)
        self.scale = _robust_scale(E)
        self._fitted = self._standard(E)
        self.reference_rows = _spread_rows(len(E), self.n_reference)
        self.reference = self._fitted[self.reference_rows]
        n, d = self.reference.shape
        self.h = float(self.bandwidth) if self.bandwidth else float(n ** (-1.0 / (d + 4)))
        raw = self._neg_log_density(self.reference, exclude=np.arange(n))
        self.raw_median = float(np.median(raw))
        self.raw_scale = float(_robust_scale(raw))
        return self

    def _standard(self, E) -> np.ndarray:
        return (np.asarray(E, np.float64) - self.centre) / self.scale

    def _neg_log_density(self, P: np.ndarray, exclude=None) -> np.ndarray:
        """-log density at standardised points ``P``; ``exclude[i]`` >= 0: leave reference row exclude[i] out."""
        from scipy.special import logsumexp

        R = self.reference
        n, d = R.shape
        r2 = np.einsum("ij,ij->i", R, R)
        out = np.empty(len(P))
        step = max(1, _CHUNK_CELLS // n)
        for i in range(0, len(P), step):
            p = P[i:i + step]
            d2 = np.maximum(np.einsum("ij,ij->i", p, p)[:, None] + r2[None, :] - 2.0 * p @ R.T, 0.0)
            arg = -0.5 * d2 / self.h**2
            k = n
            if exclude is not None:
                ex = np.asarray(exclude[i:i + step])
                rows = np.flatnonzero(ex >= 0)
                arg[rows, ex[rows]] = -np.inf
                k = n - (ex >= 0)
            out[i:i + step] = -(logsumexp(arg, axis=1) - np.log(k))
        return out + d * np.log(self.h * math.sqrt(2.0 * math.pi)) + float(np.log(self.scale).sum())

    def raw(self, E: np.ndarray) -> np.ndarray:
        """-log density of encodings ``E`` (new events, not those of ``fit``)."""
        return self._neg_log_density(self._standard(E))

    def _common(self, raw: np.ndarray) -> np.ndarray:
        return (raw - self.raw_median) / self.raw_scale

    def score(self, E: np.ndarray) -> np.ndarray:
        """The rarity of encodings ``E`` of new events on the common scale (larger: rarer)."""
        return self._common(self.raw(E))

    def score_fitted(self) -> np.ndarray:
        """The rarity of the encodings given to ``fit``, each with its own kernel left out of the density."""
        exclude = np.full(len(self._fitted), -1, np.int64)
        exclude[self.reference_rows] = np.arange(len(self.reference_rows))
        return self._common(self._neg_log_density(self._fitted, exclude=exclude))


def fit_rarity(models, X_data: np.ndarray, s: dict | None = None) -> list[EncodingRarity]:
    """One :class:`EncodingRarity` per member, fitted on the encodings of the data ``X_data`` (no labels)."""
    s = latent_settings(s)
    return [EncodingRarity(s["bandwidth"], s["n_reference"]).fit(encodings(m, X_data, s["width"])) for m in models]


def rarity_scores(models, rarities, X: np.ndarray, s: dict | None = None) -> list[np.ndarray]:
    """Per member, the rarity of the encodings of new events ``X`` on the common scale: the ensemble's member
    scores (their mean is the score of ``vae_latent``)."""
    s = latent_settings(s)
    return [r.score(encodings(m, X, s["width"])) for m, r in zip(models, rarities)]


def data_scores(models, X_data: np.ndarray, s: dict | None = None) -> dict:
    """Both scores of the data events themselves (for the sculpting checks): {"vae": mean KL, "vae_latent":
    mean rarity, each event left out of its own density}, each (N,)."""
    rarities = fit_rarity(models, X_data, s)
    return {"vae": np.mean(kl_scores(models, X_data), axis=0),
            "vae_latent": np.mean([r.score_fitted() for r in rarities], axis=0)}


# ---------------------------------------------------------------- characterisation
def fit_mass_decoder(vae, table: pa.Table, s: dict, seed: int, name: str = "mass decoder", source="table"):
    """Train the characterisation decoder on the frozen encoder of ``vae``: (decoder, info).

    ``info`` holds the m_jj standardisation (m_mean, m_std of the training
    events), the history and the best epoch. Adam; the weights of the epoch
    with the lowest validation MSE are kept; training stops after
    ``patience`` epochs without improvement.
    """
    keras = _keras()
    from .models.vae import MassDecoder, epoch_runner, mass_decoder_inputs, seed_all

    s = settings(s)
    c = s["characterisation"]
    parts = {}
    for split in ("train", "val"):
        t = select_split(table, split)
        X = inputs(t, source)
        parts[split] = (X, *vae.encode_numpy(X), t.column("mjj").to_numpy().astype(np.float64))
    m_train = parts["train"][3]
    m_mean, m_std = float(m_train.mean()), float(max(m_train.std(), 1e-6))
    scale = vae.scaling.values

    def data(split):
        X, mean, log_var, m = parts[split]
        return (mass_decoder_inputs(mean, log_var, m, m_mean, m_std, c["mass_width"]),
                (X / scale).astype(np.float32))

    (u, y), (u_val, y_val) = data("train"), data("val")
    seed_all(seed)
    dec = MassDecoder(len(INPUTS), latent_dim=s["latent_dim"], hidden=s["hidden"], layers=s["layers"], seed=seed)
    dec.compile(optimizer=keras.optimizers.Adam(learning_rate=c["lr"]))
    run = epoch_runner(dec, u.shape[1], y.shape[1])
    rng = np.random.default_rng([int(seed), 7])
    hist = {"loss": [], "val_loss": []}
    best, best_weights = 0, None
    for epoch in range(c["epochs"]):
        logs = run((u, y), c["batch_size"], rng)
        hist["loss"].append(logs["loss"])
        hist["val_loss"].append(dec.mse_numpy(u_val, y_val))
        log.info("%s epoch %d/%d: mse %.4g, val mse %.4g", name, epoch + 1, c["epochs"], hist["loss"][-1],
                 hist["val_loss"][-1])
        if best_weights is None or hist["val_loss"][-1] < hist["val_loss"][best]:
            best, best_weights = epoch, dec.get_weights()
        elif epoch - best >= c["patience"]:
            break
    dec.set_weights(best_weights)
    log.info("%s: best epoch %d of %d (val mse %.4g)", name, best + 1, len(hist["val_loss"]), hist["val_loss"][best])
    return dec, {"m_mean": m_mean, "m_std": m_std, "history": hist, "best_epoch": best}


def latent_grid(z_mean: np.ndarray, mjj_range, grid: dict, quantiles=(0.005, 0.995)) -> tuple[np.ndarray, np.ndarray]:
    """(z values, m_jj values) of the scan: z over the central range of the events' first latent mean."""
    lo, hi = np.quantile(z_mean[:, 0], quantiles)
    pad = 0.05 * max(hi - lo, 1e-3)
    return (np.linspace(lo - pad, hi + pad, grid["n_z"]),
            np.linspace(float(mjj_range[0]), float(mjj_range[1]), grid["n_mjj"]))


def scan(decoder, info: dict, scale: np.ndarray, z_grid, mjj_grid, z_rest=None) -> np.ndarray:
    """Decoded observables (physical units) on the grid: (n_mjj, n_z, n_features).

    Latent dimensions beyond the first are held at ``z_rest`` (the events' median).
    """
    mm, zz = np.meshgrid(mjj_grid, z_grid, indexing="ij")
    z = zz.reshape(-1, 1)
    if z_rest is not None and len(z_rest):
        z = np.c_[z, np.tile(np.asarray(z_rest, np.float64), (len(z), 1))]
    out = decoder.decode_numpy(z, (mm.ravel() - info["m_mean"]) / info["m_std"]) * scale
    return out.reshape(len(mjj_grid), len(z_grid), -1)


def z_weights(z_mean: np.ndarray, z_grid) -> np.ndarray:
    """Events per z grid point (nearest point; events beyond the grid count at its ends): (n_z,)."""
    z_grid = np.asarray(z_grid, np.float64)
    edges = np.r_[-np.inf, 0.5 * (z_grid[1:] + z_grid[:-1]), np.inf]
    return np.histogram(np.asarray(z_mean)[:, 0], bins=edges)[0].astype(np.float64)


def marginals(decoded: np.ndarray, weights=None) -> np.ndarray:
    """<O>_z(m_jj) / <O>_{z, m_jj}: (n_mjj, n_features).

    The average over z uses ``weights`` per z grid point (uniform if None):
    :func:`characterise` weighs by the events' z distribution (all m_jj), so
    that latent regions no event occupies, where the decoder only
    extrapolates, do not dominate the average.
    """
    w = np.ones(decoded.shape[1]) if weights is None else np.asarray(weights, np.float64)
    if w.sum() <= 0:
        raise ValueError("z weights sum to zero")
    per_m = np.einsum("mzf,z->mf", decoded, w / w.sum())
    return per_m / per_m.mean(axis=0)


def characterise(table: pa.Table, s: dict, seed: int, mjj_range, name: str = "data", source="table") -> dict:
    """VAE (KL-peak stopping) + mass decoder on one data set, and the grid scan.

    Returns a dict: ``z_grid``, ``mjj_grid``, ``decoded`` (n_mjj, n_z, F),
    ``z_weights`` (events per z grid point), ``marginals`` (n_mjj, F; the z
    average weighted by ``z_weights``), the events' latent means ``z_mean``
    (all rows of ``table``, in order) and ``mjj``, and ``info`` (training summaries).
    """
    s = settings(s)
    X, Xv = train_val(table, source)
    vae, hist = train_member(X, Xv, s, seed, name=f"vae ({name})")
    dec, info = fit_mass_decoder(vae, table, s, seeds.derive(seed, "mass decoder"), name=f"mass decoder ({name})",
                                 source=source)
    z_mean, _ = vae.encode_numpy(inputs(table, source))
    z_grid, mjj_grid = latent_grid(z_mean, mjj_range, s["characterisation"]["grid"])
    z_rest = np.median(z_mean[:, 1:], axis=0) if z_mean.shape[1] > 1 else None
    decoded = scan(dec, info, vae.scaling.values, z_grid, mjj_grid, z_rest)
    weights = z_weights(z_mean, z_grid)
    return {"z_grid": z_grid, "mjj_grid": mjj_grid, "decoded": decoded, "z_weights": weights,
            "marginals": marginals(decoded, weights),
            "z_mean": z_mean, "mjj": table.column("mjj").to_numpy().astype(np.float64),
            "info": {"name": name, "seed": seed, "n_events": table.num_rows,
                     "vae_selected_epoch": hist["selected_epoch"], "vae_peak_found": hist["peak_found"],
                     "vae_epochs_run": hist["epochs_run"], "decoder_best_epoch": info["best_epoch"],
                     "decoder_val_mse": info["history"]["val_loss"][info["best_epoch"]]}}


def random_subsets(table: pa.Table, n: int, fraction: float, seed: int) -> list[pa.Table]:
    """``n`` random subsets of ``fraction`` of the rows (their train/val split is kept)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"subset_fraction must be in (0, 1], got {fraction}")
    rng = np.random.default_rng([int(seed), 31])
    k = max(1, int(round(fraction * table.num_rows)))
    return [table.take(pa.array(np.sort(rng.permutation(table.num_rows)[:k]))) for _ in range(n)]


def characterise_background_subsets(table: pa.Table, s: dict, seed: int, mjj_range, source="table") -> list[dict]:
    """:func:`characterise` on random background-only subsets, all on the same m_jj grid."""
    c = settings(s)["characterisation"]
    subsets = random_subsets(table, c["n_subsets"], c["subset_fraction"], seed)
    return [characterise(t, s, seeds.derive(seed, "subset", i), mjj_range, name=f"subset {i + 1}/{len(subsets)}",
                         source=source) for i, t in enumerate(subsets)]


def marginal_band(results: list[dict]) -> dict:
    """Min, median and max over the background subsets of the marginals: each (n_mjj, F)."""
    m = np.stack([r["marginals"] for r in results])
    return {"lo": m.min(0), "median": np.median(m, 0), "hi": m.max(0)}


def marginal_deviations(curve: np.ndarray, band: dict, mjj_grid, sr=None) -> dict:
    """Where the marginal of a data set departs most, locally, from the background-only band, per observable.

    d(m_jj) = curve - band median. A signal makes a local bump (or dip) of d;
    residual z-m_jj correlations and the normalisation tilt or shift whole
    curves, and the ends of the scan, where the decoders extrapolate, are no
    bumps. So the deviation is the most prominent local extremum of d
    (``scipy.signal.find_peaks`` prominence: its height above the higher of
    the two valleys that separate it from higher ground) in units of the band's
    typical half-width (median over m_jj). If d has no interior extremum, the
    largest |d| is taken. Returns {observable: {"mjj", "deviation", "excess"
    (d there), "marginal", "band" [lo, median, hi], "outside_band" (the curve
    there), "in_sr"}}.
    """
    from scipy.signal import find_peaks

    mjj_grid = np.asarray(mjj_grid, np.float64)
    diff = curve - band["median"]
    typical = np.maximum(np.median(0.5 * (band["hi"] - band["lo"]), axis=0), 1e-6)
    out = {}
    for j, name in enumerate(INPUTS):
        d = diff[:, j]
        best_i, best_p = int(np.argmax(np.abs(d))), -1.0
        for sign in (1.0, -1.0):
            idx, props = find_peaks(sign * d, prominence=0.0)
            for i, p in zip(idx, props["prominences"]):
                if p > best_p:
                    best_i, best_p = int(i), float(p)
        i = best_i
        m = float(mjj_grid[i])
        out[name] = {"mjj": m, "deviation": float((best_p if best_p >= 0 else abs(d[i])) / typical[j]),
                     "excess": float(d[i]), "marginal": float(curve[i, j]),
                     "band": [float(band["lo"][i, j]), float(band["median"][i, j]), float(band["hi"][i, j])],
                     "outside_band": bool(curve[i, j] < band["lo"][i, j] or curve[i, j] > band["hi"][i, j])}
        if sr is not None:
            out[name]["in_sr"] = bool(sr[0] <= m <= sr[1])
    return out


def scan_range(mjj: np.ndarray, limits, quantiles=MJJ_QUANTILES) -> tuple[float, float]:
    """The m_jj range of the scans: the central ``quantiles`` of ``mjj`` inside ``limits``.

    The decoders extrapolate where there are few events (the high end of a
    falling spectrum) and their marginals scatter there from training to
    training: the scan keeps to where the data are.
    """
    lo, hi = np.quantile(np.asarray(mjj, np.float64), quantiles)
    return max(float(lo), float(limits[0])), min(float(hi), float(limits[1]))


def characterisation_study(with_signal: pa.Table, without_signal: pa.Table, s: dict, seed: int, mjj_range,
                           sr=None, source="table") -> dict:
    """The whole characterisation of two data sets (one with an injected signal, one without).

    The m_jj grid spans the central 98% of the events without signal inside
    ``mjj_range`` (:func:`scan_range`). Both full data sets are characterised
    with the same seed; background-only
    subsets of the one without signal give the marginal band, and the
    marginals of both full data sets are compared with it. Returns
    {"signal", "background": characterise() results, "subsets": [...],
    "band", "deviations": {"signal", "background"}}.
    """
    mjj_range = scan_range(without_signal.column("mjj").to_numpy(), mjj_range)
    log.info("m_jj scan range %.0f-%.0f GeV", *mjj_range)
    both = seeds.derive(seed, "data sets")  # one seed for both: they differ by their data only
    res_sig = characterise(with_signal, s, both, mjj_range, name="with signal", source=source)
    res_bkg = characterise(without_signal, s, both, mjj_range, name="without signal", source=source)
    subsets = characterise_background_subsets(without_signal, s, seed, mjj_range, source=source)
    band = marginal_band(subsets)
    grid = res_sig["mjj_grid"]
    dev = {"signal": marginal_deviations(res_sig["marginals"], band, grid, sr),
           "background": marginal_deviations(res_bkg["marginals"], band, grid, sr)}
    for name, d in dev["signal"].items():
        log.info("largest deviation of <%s>_z from the background band: m_jj = %.0f GeV (%.2f, %s the band)",
                 name, d["mjj"], d["deviation"], "outside" if d["outside_band"] else "inside")
    return {"signal": res_sig, "background": res_bkg, "subsets": subsets, "band": band, "deviations": dev}


def characterisation_summary(study: dict, sr=None) -> dict:
    """The JSON summary of :func:`characterisation_study`: the m_jj of the largest deviation per observable."""
    return {
        "observables": list(INPUTS),
        "largest_deviation": study["deviations"]["signal"],
        "largest_deviation_without_signal": study["deviations"]["background"],
        "sr": list(sr) if sr is not None else None,
        "mjj_range": [float(study["signal"]["mjj_grid"][0]), float(study["signal"]["mjj_grid"][-1])],
        "mjj_grid": study["signal"]["mjj_grid"],
        "marginals": {"with_signal": study["signal"]["marginals"], "without_signal": study["background"]["marginals"],
                      "band": study["band"]},
        "training": {"with_signal": study["signal"]["info"], "without_signal": study["background"]["info"],
                     "subsets": [r["info"] for r in study["subsets"]]},
    }


# ---------------------------------------------------------------- figures
def _hpd_levels(h: np.ndarray, fractions=(0.95, 0.68)) -> list[float]:
    """Density levels enclosing ``fractions`` of a histogram's content (highest bins first), increasing."""
    v = np.sort(h.ravel())[::-1]
    c = np.cumsum(v)
    if c[-1] <= 0:
        return []
    levels = [float(v[min(np.searchsorted(c, f * c[-1]), len(v) - 1)]) for f in fractions]
    return sorted(set(lv for lv in levels if lv > 0))


def _density(mjj, z, m_edges, z_edges) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    h, _, _ = np.histogram2d(mjj, z, bins=[m_edges, z_edges])
    return gaussian_filter(h, 1.0)


def _edges(x):
    x = np.asarray(x, np.float64)
    mid = 0.5 * (x[1:] + x[:-1])
    return np.r_[x[0] - (mid[0] - x[0]), mid, x[-1] + (x[-1] - mid[-1])]


def plot_latent_map(result: dict, path, labels=None, title=None) -> None:
    """Heat maps of the decoded observables over (m_jj, z), with contours of the decoded values and,
    if ``labels`` are given, the 68% (dashed) and 95% (dotted) regions of signal (red) and background (black)."""
    from matplotlib.lines import Line2D

    from . import plots

    plt = plots.plt
    mg, zg, dec = result["mjj_grid"], result["z_grid"], result["decoded"]
    fig, axes = plt.subplots(3, 2, figsize=(15, 17), sharex=True, sharey=True)
    m_edges, z_edges = _edges(mg), _edges(zg)
    regions = []
    if labels is not None:
        labels = np.asarray(labels)
        for lab, colour in ((0, "k"), (1, "r")):
            sel = labels == lab
            if sel.sum() >= 10:
                h = _density(result["mjj"][sel], result["z_mean"][sel, 0], m_edges, z_edges)
                regions.append((h, _hpd_levels(h), colour))
    for j, name in enumerate(INPUTS):
        ax = axes[j // 2, j % 2]
        im = ax.pcolormesh(m_edges, z_edges, dec[:, :, j].T, cmap="viridis", shading="flat")
        fig.colorbar(im, ax=ax, label=LABELS[name], pad=0.01)
        cs = ax.contour(mg, zg, dec[:, :, j].T, levels=6, colors="w", linewidths=0.8, alpha=0.8)
        ax.clabel(cs, fontsize=9, fmt="%.3g")
        for h, levels, colour in regions:
            if levels:
                ax.contour(mg, zg, h.T, levels=levels, colors=colour, linestyles=[":", "--"][-len(levels):],
                           linewidths=1.6)
        if j // 2 == 2:
            ax.set_xlabel(r"$m_{jj}$ [GeV]")
        if j % 2 == 0:
            ax.set_ylabel(r"$z$ (latent mean)")
    plots._tag(axes[0, 0], None)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    if regions:
        handles = [Line2D([], [], color=c, ls=ls, label=f"{'signal' if c == 'r' else 'background'} {q}")
                   for _, _, c in regions for ls, q in (("--", "68%"), (":", "95%"))]
        fig.legend(handles=handles, fontsize=13, loc="upper right", ncol=len(handles), frameon=False,
                   bbox_to_anchor=(1.0, 0.985))
    if title:
        fig.text(0.01, 0.975, title, fontsize=16, ha="left", va="center")
    plots.save(fig, path)


def plot_marginals(mjj_grid, band: dict, curves: dict, path, sr=None, deviations=None, title=None) -> None:
    """<O>_z(m_jj) / <O> per observable: background-only band (min-max over subsets, median dashed) and
    the ``curves`` ({label: (n_mjj, F)}) drawn over it; a triangle marks the largest deviation."""
    from . import plots

    plt = plots.plt
    fig, axes = plt.subplots(3, 2, figsize=(15, 15), sharex=True)
    styles = [("r", "-"), ("k", ":"), ("b", "-.")]
    for j, name in enumerate(INPUTS):
        ax = axes[j // 2, j % 2]
        ax.fill_between(mjj_grid, band["lo"][:, j], band["hi"][:, j], color="grey", alpha=0.35, lw=0,
                        label="background-only subsets")
        ax.plot(mjj_grid, band["median"][:, j], color="grey", ls="--", lw=1.2)
        for (label, c), (colour, ls) in zip(curves.items(), styles):
            ax.plot(mjj_grid, c[:, j], color=colour, ls=ls, lw=2, label=label)
        if sr is not None:
            ax.axvspan(*sr, color="orange", alpha=0.12, label="SR")
        if deviations and name in deviations:
            d = deviations[name]
            ax.plot([d["mjj"]], [d["marginal"]], "v", color="r", ms=10)
        ax.set_ylabel(rf"$\langle O\rangle_z / \langle O\rangle$: {LABELS[name].split(' [')[0]}", fontsize=15)
        if j // 2 == 2:
            ax.set_xlabel(r"$m_{jj}$ [GeV]")
    plots._tag(axes[0, 0], None)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=13, loc="upper right", ncol=len(handles), frameon=False,
               bbox_to_anchor=(1.0, 0.985))
    if title:
        fig.text(0.01, 0.975, title, fontsize=16, ha="left", va="center")
    plots.save(fig, path)


def plot_training(histories: list[dict], path, title=None) -> None:
    """Per member: the validation KL (and the training KL) against epoch, the kept epoch (the KL peak, or the
    largest validation KL without one) marked."""
    from . import plots

    plt = plots.plt
    n = len(histories)
    cols = min(n, 5)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.6 * rows + 0.8), squeeze=False, sharex=True)
    for k, h in enumerate(histories):
        ax = axes[k // cols, k % cols]
        ep = np.arange(1, len(h["val_kl"]) + 1)
        ax.plot(ep, h["kl"], color="grey", lw=1.2, label="training")
        ax.plot(ep, h["val_kl"], color="tab:brown", lw=1.8, label="validation")
        sel = h["selected_epoch"]
        ax.plot([sel + 1], [h["val_kl"][sel]], "v", color="r", ms=10,
                label="kept: KL peak" if h["peak_found"] else "kept: largest KL (no peak)")
        ax.set_title(f"member {k}: epoch {sel + 1}" + ("" if h["peak_found"] else " (no peak)"), fontsize=13)
        ax.tick_params(labelsize=11)
        if k % cols == 0:
            ax.set_ylabel("mean KL to the prior", fontsize=13)
        if k // cols == rows - 1:
            ax.set_xlabel("epoch", fontsize=13)
        if k == 0:
            ax.legend(fontsize=10)
    for k in range(n, rows * cols):
        axes[k // cols, k % cols].set_visible(False)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    if title:
        fig.text(0.01, 0.975, title, fontsize=15, ha="left", va="center")
    plots.save(fig, path)


def plot_latent_means(means: list[np.ndarray], selected_epochs, path, labels=None, title=None) -> None:
    """Per member: the distribution of the data's latent means (first latent dimension) at the kept epoch,
    with the prior N(0, 1) dashed; with ``labels`` (figure only), background and signal drawn separately,
    each normalised to unit area."""
    from . import plots

    plt = plots.plt
    n = len(means)
    cols = min(n, 5)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.6 * rows + 0.8), squeeze=False)
    for k, z in enumerate(means):
        ax = axes[k // cols, k % cols]
        z = np.asarray(z)[:, 0]
        lo, hi = np.quantile(z, [0.001, 0.999])
        lo, hi = min(lo, -3.0), max(hi, 3.0)
        bins = np.linspace(lo, hi, 60)
        groups = [("data", z, "k")] if labels is None else [
            ("background", z[np.asarray(labels) == 0], "k"), ("signal", z[np.asarray(labels) == 1], "r")]
        for name, v, colour in groups:
            if len(v):
                ax.hist(np.clip(v, lo, hi), bins=bins, density=True, histtype="step", color=colour, lw=1.6,
                        label=f"{name} ({len(v)})")
        x = np.linspace(lo, hi, 200)
        ax.plot(x, np.exp(-0.5 * x**2) / math.sqrt(2 * math.pi), color="tab:blue", ls="--", lw=1.2,
                label="prior N(0, 1)")
        ax.axvline(0.0, color="tab:blue", lw=0.8, alpha=0.6)
        ax.set_title(f"member {k}: epoch {selected_epochs[k] + 1}", fontsize=13)
        ax.tick_params(labelsize=11)
        ax.set_xlabel("latent mean $z$", fontsize=13)
        if k == 0:
            ax.legend(fontsize=10)
    for k in range(n, rows * cols):
        axes[k // cols, k % cols].set_visible(False)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    if title:
        fig.text(0.01, 0.975, title, fontsize=15, ha="left", va="center")
    plots.save(fig, path)
