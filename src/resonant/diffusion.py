"""Full-phase-space generator by score-based diffusion (Keras 3 on TensorFlow): a jet model and a particle model.

The diffusion half of the full-phase-space paper (Mikuni et al.), the twin of
:mod:`resonant.flow_matching` with the same verbs (train, sample, save, load, generate)
and the same generated-background HDF5.

Diffusion (variance preserving, cosine log-SNR schedule, v-prediction; Kingma et al.,
Salimans & Ho)::

    phi(t) = a t + b,   alpha = cos phi,  sigma = sin phi          (t in [0, 1])
    logsnr = -2 log tan phi  runs from +20 (t = 0) to -20 (t = 1)  (a, b clip it there)
    z_t = alpha x + sigma eps,  target v = alpha eps - sigma x
    loss = | v_net(z_t, t, cond) - v |^2                           (over real particles only)

Sampling is deterministic DDIM from z_1 ~ N(0, 1) to t = 0 on ``steps`` uniform steps in
t, with a second-order (midpoint) correction: from x_hat = alpha z - sigma v (the data
prediction) each step goes

    z_s = alpha_s x' + sigma_s (z_t - alpha_t x') / sigma_t

with x' = x_hat(z_t, t) (first order: DDIM, 1 network evaluation per step) or, second
order, x' = x_hat at the midpoint time, evaluated at the DDIM point there (2
evaluations per step; DPM-Solver-2 in data-prediction form). The published code writes
the same correction for the noise prediction, dividing by alpha_t = 4.5e-5 at t = 1; on a
2-d gaussian mixture with the exact score that form is far less accurate with few steps
(mean deviation from the exact ODE solution 5.3 at 16 steps, against 0.007 here).

* **jet model** (:class:`JetDiffusion`): both jets' (pt, eta, phi, m, n), pre-processed by
  :class:`~resonant.pointcloud.JetTransform` (n dequantised by U(-0.5, 0.5) for
  training), as a set of two tokens given ``JetTransform.mjj_condition(mjj)``;
* **particle model** (:class:`ParticleDiffusion`): each jet's constituents as one cloud (N
  events give 2N clouds), pre-processed by :class:`~resonant.pointcloud.ParticleTransform`,
  given the jet's transformed (pt, eta, phi, m, n) and the m_jj condition (the paper's
  Table I lists N among the particle model's conditions, as the published code does);
  a generated jet gets ``pointcloud.n_valid(jets, max_particles)`` particles.

Both networks are :class:`resonant.models.diffusion.ScoreNet` (DeepSets with attention).

Training (:func:`fit_score_net`, one custom train step for every engine of
:mod:`resonant.train.keras_distributed`): Adamax with a cosine decay of the learning rate
``lr`` x the number of replicas over all steps, ``batch_size`` examples per replica and
step, per-tensor gradient-norm clipping, a bias-corrected exponential moving average
(EMA) of the weights that is used for validation, early stopping on the validation loss
and the best epoch's EMA weights in the returned model. All randomness of a training
example (diffusion time, noise, dequantisation) is a counter-based hash of (seed,
epoch, example index): it does not depend on how a global batch is split between
workers (a run on R workers is, up to float rounding, the run of one process on the
global batch) and a resumed training repeats the interrupted one exactly. Every epoch
the chief writes ``workdir/checkpoints/last.h5``; a later call with the same settings,
seed, data and number of replicas resumes from it.

Pipeline::

    jet_model, _ = train_jet_model(train, val, settings["jet_model"], seed, workdir / "jets", engine="tf")
    particle_model, _ = train_particle_model(train, val, settings["particle_model"], seed, workdir / "particles")
    jet_model.save(path_jets); particle_model.save(path_particles)           # the chief only
    with GeneratedWriter(out, max_particles, attrs) as writer:
        generate(jet_model, particle_model, mjj_sr, max_particles, steps, batch_size, seed, writer)
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np

from . import generative, io
from .errors import InputError
from .generative import (GeneratorModel, JetExamples, JetModel, N_PARTICLE_CONDITION, PT_REL_RULE, ParticleExamples,  # noqa: F401
                         ParticleModel, SLOTS_PER_JET, checked_settings, from_header, jet_training_transforms,
                         particle_training_transforms, read_saved)
from .models import diffusion as md  # sets KERAS_BACKEND=tensorflow before keras is imported
from .pointcloud import (JET_FIELDS, PARTICLE_FIELDS, JetTransform, ParticleTransform, PointCloud, data_fingerprint,
                         jsonable)

log = logging.getLogger(__name__)

_TRAINING = {"width": 128, "blocks": 6, "heads": 2, "fourier_dim": 64, "lr": 3e-4, "batch_size": 128,
             "epochs": 300, "patience": 20, "ema_decay": 0.999, "grad_clip": 1.0}
#: the settings of the two models and of sampling (the published values; fourier_dim is the published
#: time embedding's size, patience the published config's early stopping)
DEFAULTS = {
    "jet_model": dict(_TRAINING),
    "particle_model": {**_TRAINING, "pt_rel": "log1m"},
    "sampling": {"steps": 512, "batch_size": 4096},
}
#: per setting: integer?, the valid range, its description
_RULES = {
    **{k: (True, lambda v: v >= 1, "an integer >= 1")
       for k in ("width", "blocks", "heads", "batch_size", "epochs", "patience", "steps")},
    "fourier_dim": (True, lambda v: v >= 2 and v % 2 == 0, "an even integer >= 2"),
    "lr": (False, lambda v: v > 0, "a number > 0"),
    "grad_clip": (False, lambda v: v > 0, "a number > 0"),
    "ema_decay": (False, lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "pt_rel": PT_REL_RULE,
}
_FORMAT = 1  # of the saved model files
LOGSNR_MIN, LOGSNR_MAX = -20.0, 20.0
_B = math.atan(math.exp(-0.5 * LOGSNR_MAX))
_A = math.atan(math.exp(-0.5 * LOGSNR_MIN)) - _B
N_JET_FEATURES = len(JET_FIELDS)
_STREAM_TRAIN, _STREAM_VAL = 1, 2


def settings_with_defaults(kind: str, settings: dict | None) -> dict:
    """``DEFAULTS[kind]`` updated by ``settings``; unknown keys or out-of-range values raise ``ValueError``."""
    return checked_settings("diffusion", DEFAULTS, _RULES, kind, settings)


# --------------------------------------------------------------------------------------------- schedule

def alpha_sigma(t):
    """(alpha, sigma) = (cos, sin) of phi = a t + b: the cosine schedule with log-SNR clipped to [-20, 20].

    ``t``: a tensor, array or number; the results are float32 tensors of its shape.
    """
    import tensorflow as tf

    phi = _A * tf.cast(t, tf.float32) + _B
    return tf.cos(phi), tf.sin(phi)


def logsnr(t):
    """log(alpha^2 / sigma^2) at time ``t``: from +20 at t = 0 to -20 at t = 1."""
    import tensorflow as tf

    return -2.0 * tf.math.log(tf.tan(_A * tf.cast(t, tf.float32) + _B))


def ddim_sample(v_fn, z, steps, second_order: bool = True):
    """z at t = 0 from noise ``z`` at t = 1 by deterministic DDIM on ``steps`` uniform steps in t.

    ``v_fn(z, t)`` is the predicted velocity at the scalar time ``t`` (a float32 tensor);
    ``second_order`` adds the midpoint correction (2 evaluations of ``v_fn`` per step
    instead of 1; see the module docstring). Padded slots stay zero if ``v_fn`` keeps them
    so. Runs eagerly or inside a ``tf.function`` (a ``tf.while_loop`` over the steps).
    """
    import tensorflow as tf

    steps = tf.convert_to_tensor(steps, tf.int32)
    tf.debugging.assert_positive(steps, message="DDIM needs at least one step")
    n = tf.cast(steps, tf.float32)
    z = tf.convert_to_tensor(z, tf.float32)

    def x_hat(z, t):
        a, s = alpha_sigma(t)
        return a * z - s * v_fn(z, t)

    def body(i, z):
        t = 1.0 - tf.cast(i, tf.float32) / n
        s = 1.0 - tf.cast(i + 1, tf.float32) / n
        a_t, s_t = alpha_sigma(t)
        a_s, s_s = alpha_sigma(s)
        x = x_hat(z, t)
        if second_order:
            m = 0.5 * (t + s)
            a_m, s_m = alpha_sigma(m)
            x = x_hat(a_m * x + s_m * (z - a_t * x) / s_t, m)
        return i + 1, a_s * x + s_s * (z - a_t * x) / s_t

    _, z = tf.while_loop(lambda i, z: i < steps, body, (tf.constant(0), z))
    return z


def evaluations(steps: int, second_order: bool = True) -> int:
    """Network evaluations of one :func:`ddim_sample` call (per example)."""
    return int(steps) * (2 if second_order else 1)


# --------------------------------------------------------------------------------------------- keyed randomness

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix64(x) -> np.ndarray:
    """SplitMix64's finaliser (a bijective 64-bit hash), element-wise."""
    x = np.asarray(x, np.uint64)
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def example_keys(seed: int, *keys, index) -> np.ndarray:
    """uint64 keys (len(index),) of examples ``index`` in the stream named by integers (``seed``, ``keys``)."""
    k = np.uint64(0)
    with np.errstate(over="ignore"):
        for v in (int(seed), *map(int, keys)):
            k = _mix64(k ^ _mix64(np.uint64(v % 2**64) + _GOLDEN))
        return _mix64(k ^ _mix64(np.asarray(index, np.uint64) + _GOLDEN))


def _words(keys: np.ndarray, n: int, offset: int = 0) -> np.ndarray:
    with np.errstate(over="ignore"):
        counter = (np.arange(offset, offset + n, dtype=np.uint64) + np.uint64(1)) * _GOLDEN
        return _mix64(keys[:, None] + counter[None, :])


def keyed_uniform(keys: np.ndarray, n: int, offset: int = 0) -> np.ndarray:
    """float64 (len(keys), n) uniform in [0, 1): draws ``offset`` ... ``offset + n - 1`` of each key's stream."""
    return (_words(np.asarray(keys, np.uint64), n, offset) >> np.uint64(11)).astype(np.float64) * 2.0**-53


def keyed_normal(keys: np.ndarray, n: int, offset: int = 0) -> np.ndarray:
    """float32 (len(keys), n) standard normal: value j from draws 2 (offset + j) and 2 (offset + j) + 1 of each
    key's stream (Box-Muller), so the first values do not depend on ``n``."""
    u = keyed_uniform(keys, 2 * n, 2 * offset)
    return (np.sqrt(-2.0 * np.log1p(-u[:, 0::2])) * np.cos(2.0 * np.pi * u[:, 1::2])).astype(np.float32)


# --------------------------------------------------------------------------------------------- data

class ScoreData:
    """Training examples of a score model: sets of tokens with a condition and a mask.

    Subclasses define ``n_features``, ``n_condition``, ``__len__`` and :meth:`examples`.
    :meth:`batch` adds the diffusion time and noise of every example, drawn from its key.
    """

    n_features = n_condition = 0

    def examples(self, idx: np.ndarray, keys: np.ndarray):
        """(x float32 (B, T, F), cond float32 (B, C), mask float32 (B, T)) of examples ``idx`` (keys: their
        random streams, for any randomness of the examples themselves)."""
        raise NotImplementedError

    def batch(self, idx, keys) -> dict:
        """The arrays of one replica's batch: x, cond, mask, t (B,), eps (B, T, F) (noise, 0 in padded slots)."""
        idx = np.asarray(idx, np.int64)
        keys = np.asarray(keys, np.uint64)
        x, cond, mask = self.examples(idx, keys)
        b, tokens, f = x.shape
        t = keyed_uniform(keys, 1)[:, 0].astype(np.float32)
        eps = keyed_normal(keys, tokens * f, offset=1).reshape(b, tokens, f) * mask[..., None]
        return {"x": x, "cond": cond, "mask": mask, "t": t, "eps": eps.astype(np.float32)}


class JetData(JetExamples, ScoreData):
    """Events as the jet model sees them: two tokens of transformed jets, n dequantised, given the m_jj condition."""

    n_features, n_condition = N_JET_FEATURES, 1

    def examples(self, idx, keys):
        # draws 2**40 ... of the key's stream: far from the time and the noise
        x, cond = self.jet_tokens(idx, keyed_uniform(keys, 2, offset=2**40))
        return x, cond, np.ones(x.shape[:2], np.float32)


class ParticleData(ParticleExamples, ScoreData):
    """Jets as clouds of transformed constituents, given the jet and m_jj; a batch is cut to its used slots."""

    n_features, n_condition = len(PARTICLE_FIELDS), N_PARTICLE_CONDITION

    def examples(self, idx, keys):
        x, cond, mask = self.clouds(idx)
        return x, cond, mask.astype(np.float32)


def epoch_batches(n: int, batch_size: int, replicas: int, seed: int, epoch: int, train: bool = True) -> list:
    """The global batches of an epoch, each a list of ``replicas`` index arrays (one per replica).

    Training: a new permutation every epoch (a function of ``seed`` and ``epoch``), cut into
    ``n // (batch_size * replicas)`` global batches of ``batch_size`` examples per replica (the
    remainder is left out that epoch). Validation: the examples in order, all of them (the
    last global batch may be smaller; a replica's share may be empty).
    """
    size = int(batch_size) * int(replicas)
    if train:
        order = np.random.default_rng([int(seed), 0, int(epoch)]).permutation(n)
        cuts = [order[b * size:(b + 1) * size] for b in range(n // size)]
    else:
        cuts = [np.arange(i, min(i + size, n)) for i in range(0, n, size)]
    return [np.array_split(c, replicas) for c in cuts]


# --------------------------------------------------------------------------------------------- training

def _checkpoint_arrays(prefix: str, values) -> dict:
    """Named arrays of ``values`` (variables or arrays) for an HDF5 file (scalars as 1-element arrays)."""
    return {f"{prefix}.{i:04d}": np.atleast_1d(np.asarray(_numpy(v))) for i, v in enumerate(values)}


def _numpy(v):
    import keras

    return keras.ops.convert_to_numpy(v)


def _assign(variables, arrays: list, what: str) -> None:
    if len(arrays) != len(variables):
        raise ValueError(f"{what}: {len(arrays)} stored arrays for {len(variables)} variables")
    for v, a in zip(variables, arrays):
        a = np.asarray(a)
        if a.size != int(np.prod(v.shape)):
            raise ValueError(f"{what}: stored shape {a.shape} does not fit variable {v.path} {tuple(v.shape)}")
        v.assign(a.reshape(v.shape).astype(v.dtype))


def _stored(arrays: dict, prefix: str) -> list:
    return [arrays[k] for k in sorted(k for k in arrays if k.startswith(prefix + "."))]


def _read_checkpoint(path: Path):
    """(arrays, state) of a checkpoint, or None if it cannot be read."""
    try:
        arrays, attrs = io.read_h5(path)
        return arrays, attrs["state"]
    except (InputError, KeyError, ValueError) as e:
        log.warning("cannot read checkpoint %s (%s): starting afresh", path, e)
        return None


def score_steps(eng, net, ema, opt, decay: float, clip: float):
    """(train_step, val_step): ``tf.function``s of one global batch, as given by ``eng.distribute``.

    Each takes a dict of per-replica tensors (:meth:`ScoreData.batch`) and returns the sum
    over all replicas of [squared error, number of real values] (``val_step``: of the
    ``ema`` network). ``train_step`` runs on every replica: the loss is the replica's share
    of the global batch's mean over real values (its squared error times the number of
    replicas over the global count, so that the mean over replicas is the global mean);
    the gradients are averaged over the replicas (:meth:`Engine.all_mean`), clipped to
    norm ``clip`` tensor by tensor (as published) and applied; then, once per step, the
    bias-corrected EMA of the weights (see ``flow_matching.ema_multi_avg_fn``) is updated.
    """
    import tensorflow as tf

    replicas = float(eng.num_replicas)

    def errors(model, batch, training):
        a, sg = (v[:, None, None] for v in alpha_sigma(batch["t"]))
        x, eps, mask = batch["x"], batch["eps"], batch["mask"]
        pred = model((a * x + sg * eps, batch["t"], batch["cond"], mask), training=training)
        se = tf.reduce_sum(tf.square(pred - (a * eps - sg * x)) * mask[..., None])
        return tf.stack([se, tf.reduce_sum(mask) * float(x.shape[-1])])

    def replica_train(batch):
        with tf.GradientTape() as tape:
            sums = errors(net, batch, True)
            count = tf.maximum(eng.all_sum([sums[1]])[0], 1.0)
            loss = sums[0] * replicas / count
        grads = eng.all_mean(tape.gradient(loss, net.trainable_variables))
        eng.apply_gradients(opt, [tf.clip_by_norm(g, clip) for g in grads], net.trainable_variables)
        return sums

    @tf.function(reduce_retracing=True, autograph=False)
    def train_step(inputs):
        out = eng.run(replica_train, inputs)
        k = tf.cast(opt.iterations, tf.float32)
        w = (1.0 - decay) / (1.0 - tf.pow(decay, k)) if decay > 0 else tf.constant(1.0)
        for e, v in zip(ema.weights, net.weights):
            e.assign(e + w * (v - e))
        return out

    @tf.function(reduce_retracing=True, autograph=False)
    def val_step(inputs):
        return eng.run(lambda batch: errors(ema, batch, False), inputs)

    return train_step, val_step


def _write_checkpoint(path: Path, net, ema, opt, best: list, state: dict) -> None:
    io.write_h5(path, {**_checkpoint_arrays("net", net.weights), **_checkpoint_arrays("ema", ema.weights),
                       **_checkpoint_arrays("opt", opt.variables), **_checkpoint_arrays("best", best)},
                attrs={"state": state})


def _restore_checkpoint(path: Path, fingerprint: dict, net, ema, opt, name: str):
    """(best EMA weights, state) of the checkpoint at ``path`` if it was written for ``fingerprint`` (the
    weights, EMA weights and optimizer state are restored), else None."""
    state = _read_checkpoint(path) if path.exists() else None
    if state is None:
        return None
    arrays, st = state
    if st.get("fingerprint") != fingerprint:
        log.warning("%s: %s was written for other settings, seed, data or replicas: training afresh", name, path)
        return None
    _assign(net.weights, _stored(arrays, "net"), f"{path} (weights)")
    _assign(ema.weights, _stored(arrays, "ema"), f"{path} (EMA weights)")
    _assign(opt.variables, _stored(arrays, "opt"), f"{path} (optimizer)")
    return _stored(arrays, "best"), st


def fit_score_net(make_net, train: ScoreData, val: ScoreData, settings: dict, seed: int, workdir, engine=None,
                  name: str = "score model", fingerprint: dict | None = None, epoch_callback=None):
    """Train the network ``make_net()`` on ``train``; returns (EMA network of the best epoch, history).

    ``settings``: a complete model settings dict (:func:`settings_with_defaults`).
    ``engine``: a name in :data:`resonant.train.keras_distributed.ENGINES` (default "tf") or
    an engine; every replica of a multi-worker run calls this function and gets the model
    (only the chief, ``history["rank"] == 0``, should save it). Each replica takes
    ``batch_size`` examples per step; the learning rate is ``lr`` x the number of replicas,
    with a cosine decay to 0 over ``epochs``. See :func:`score_steps` for the step.

    Checkpoints: the chief writes ``workdir/checkpoints/last.h5`` (weights, EMA weights,
    best EMA weights, optimizer state, history) after every epoch; every worker reads it
    at the start (``workdir`` must be on a file system they share). If it exists and was
    written for the same ``fingerprint`` (settings, seed, data, number of replicas), the
    training resumes from it -- or, if that training had finished, is not run again;
    otherwise it starts afresh. ``epoch_callback(epoch, history, net)`` (``net``: the raw,
    not averaged, network) is called on every replica after each epoch's checkpoint (an
    exception there interrupts the training).
    """
    import keras
    import tensorflow as tf

    from .train.keras_distributed import get_engine

    s = dict(settings)
    seed = int(seed)
    if seed < 0:
        raise ValueError(f"the seed must be >= 0, got {seed}")
    eng = get_engine(engine)
    R = eng.num_replicas
    steps = len(train) // (int(s["batch_size"]) * R)
    if steps < 1:
        raise ValueError(f"{name}: {len(train)} training examples do not fill one step of {s['batch_size']} "
                         f"examples x {R} replica(s); lower batch_size")
    if len(val) < 1:
        raise ValueError(f"{name}: no validation examples")
    fingerprint = jsonable({"name": name, "settings": s, "seed": seed, "n_train": len(train), "n_val": len(val),
                             "replicas": R, **dict(fingerprint or {})})
    ckpt = Path(workdir) / "checkpoints" / "last.h5"
    epochs, patience = int(s["epochs"]), int(s["patience"])

    with eng.scope():
        md.seed_all(seed)  # the same initial weights on every replica
        net, ema = make_net(), make_net()
        schedule = keras.optimizers.schedules.CosineDecay(float(s["lr"]) * R, decay_steps=epochs * steps)
        opt = keras.optimizers.Adamax(learning_rate=schedule)
        opt.build(net.trainable_variables)
    eng.broadcast_variables(net.weights)
    for e, v in zip(ema.weights, net.weights):
        e.assign(v)

    history = {"epoch": [], "train_loss": [], "val_loss": [], "lr": [], "epoch_time": [], "examples_per_second": [],
               "resumed_at": []}
    state = {"next_epoch": 0, "best_val": math.inf, "best_epoch": -1, "since_best": 0, "finished": False}
    best = [np.array(_numpy(v)) for v in ema.weights]
    restored = _restore_checkpoint(ckpt, fingerprint, net, ema, opt, name)
    if restored is not None:
        best, st = restored
        history = {k: list(v) for k, v in st["history"].items()}
        state = {k: st[k] for k in state}
        if state["finished"]:
            log.info("%s: the training in %s has finished; using its best epoch", name, ckpt.parent)
        else:
            log.info("%s: resuming from %s at epoch %d", name, ckpt, state["next_epoch"])
            history["resumed_at"].append(state["next_epoch"])
    train_step, val_step = score_steps(eng, net, ema, opt, float(s["ema_decay"]), float(s["grad_clip"]))

    def run_epoch(data, step_fn, stream, epoch, train_mode):
        acc, n_ex = np.zeros(2), 0
        for shares in epoch_batches(len(data), s["batch_size"], R, seed, epoch, train=train_mode):
            keys = [example_keys(seed, stream, epoch if train_mode else 0, index=idx) for idx in shares]

            def shard(r, shares=shares, keys=keys):
                return {k: tf.constant(v) for k, v in data.batch(shares[r], keys[r]).items()}

            acc += np.asarray(step_fn(eng.distribute(shard)), np.float64)
            n_ex += sum(len(i) for i in shares)
        return float(acc[0] / max(acc[1], 1.0)), n_ex

    t_call = time.perf_counter()
    while not state["finished"]:
        epoch, t0 = state["next_epoch"], time.perf_counter()
        lr = float(_numpy(opt.learning_rate))
        train_loss, n_ex = run_epoch(train, train_step, _STREAM_TRAIN, epoch, True)
        val_loss, _ = run_epoch(val, val_step, _STREAM_VAL, epoch, False)
        seconds = time.perf_counter() - t0
        if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
            raise FloatingPointError(f"{name}: the loss diverged at epoch {epoch} (train {train_loss}, val "
                                     f"{val_loss}); lower the learning rate or the gradient clip")
        for k, v in (("epoch", epoch), ("train_loss", train_loss), ("val_loss", val_loss), ("lr", lr),
                     ("epoch_time", seconds), ("examples_per_second", n_ex / max(seconds, 1e-9))):
            history[k].append(v)
        if val_loss < state["best_val"]:
            state.update(best_val=val_loss, best_epoch=epoch, since_best=0)
            best = [np.array(_numpy(v)) for v in ema.weights]
        else:
            state["since_best"] += 1
        state.update(next_epoch=epoch + 1, finished=state["since_best"] >= patience or epoch + 1 >= epochs)
        if eng.is_chief:
            log.info("%s epoch %d/%d: train %.5f val %.5f (best %.5f at epoch %d) lr %.2e %.1fs %.0f examples/s",
                     name, epoch, epochs - 1, train_loss, val_loss, state["best_val"], state["best_epoch"], lr,
                     seconds, history["examples_per_second"][-1])
            _write_checkpoint(ckpt, net, ema, opt, best, {**state, "fingerprint": fingerprint, "history": history})
        if epoch_callback is not None:
            epoch_callback(epoch, history, net)
        if state["since_best"] >= patience and eng.is_chief:
            log.info("%s: early stop after epoch %d (best epoch %d)", name, epoch, state["best_epoch"])

    out = make_net() if eng.distributed_variables else ema  # plain variables for sampling
    _assign(out.weights, best, f"{name} best weights")
    history.update(best_epoch=state["best_epoch"], epochs_run=len(history["train_loss"]), seed=seed, world_size=R,
                   rank=eng.rank, engine=eng.name, steps_per_epoch=steps, call_seconds=time.perf_counter() - t_call,
                   train_seconds=float(sum(history["epoch_time"])), n_parameters=md.n_parameters(out))
    return out, history


# --------------------------------------------------------------------------------------------- models

def make_net(kind: str, settings: dict, seed: int = 0):
    """The score network of ``kind`` ("jet_model" or "particle_model") for complete ``settings``, built."""
    dims = {"jet_model": (N_JET_FEATURES, 1), "particle_model": (len(PARTICLE_FIELDS), N_PARTICLE_CONDITION)}
    if kind not in dims:
        raise ValueError(f"unknown model kind {kind!r}")
    return md.build_score_net(*dims[kind], width=settings["width"], blocks=settings["blocks"],
                              heads=settings["heads"], fourier_dim=settings["fourier_dim"], seed=seed)


class _Diffusion(GeneratorModel):
    """A diffusion model: DDIM sampling with one traced graph per order; saved as HDF5."""

    family = "diffusion"
    default_steps = DEFAULTS["sampling"]["steps"]
    checked = staticmethod(settings_with_defaults)

    def _integrate(self, z, cond, mask, steps, second_order: bool = True) -> np.ndarray:
        """DDIM from noise ``z`` (B, T, F) given ``cond`` (B, C) and ``mask`` (B, T)."""
        import tensorflow as tf

        if int(steps) < 1:
            raise ValueError(f"sampling needs at least one step, got {steps}")
        samplers = self.__dict__.setdefault("_samplers", {})
        fn = samplers.get(bool(second_order))
        if fn is None:
            net = self.net
            spec = [tf.TensorSpec([None, None, net.n_features], tf.float32),
                    tf.TensorSpec([None, net.n_condition], tf.float32), tf.TensorSpec([None, None], tf.float32),
                    tf.TensorSpec([], tf.int32)]

            @tf.function(input_signature=spec, autograph=False)
            def fn(z, cond, mask, steps):
                def v_fn(zz, t):
                    return net((zz, tf.fill([tf.shape(zz)[0]], t), cond, mask), training=False)

                return ddim_sample(v_fn, z * mask[..., None], steps, second_order)

            samplers[bool(second_order)] = fn
        out = fn(tf.constant(z, tf.float32), tf.constant(cond, tf.float32), tf.constant(mask, tf.float32),
                 tf.constant(int(steps), tf.int32))
        return out.numpy()

    def save(self, path) -> None:
        """``path`` (HDF5: weights, settings, transforms) and ``path.with_suffix('.json')`` (settings, history)."""
        path = Path(path)
        io.write_h5(path, _checkpoint_arrays("w", self.net.weights),
                    attrs={"format": _FORMAT, "fourier_seed": self.net.seed, **self.header()})
        io.write_json(self.summary(md.n_parameters(self.net)), path.with_suffix(".json"))


class JetDiffusion(_Diffusion, JetModel):
    """The jet model: a score model of both jets' (pt, eta, phi, m, n) as two tokens given m_jj."""


class ParticleDiffusion(_Diffusion, ParticleModel):
    """The particle model: a score model of each jet's constituents given the jet and m_jj."""


def load(path) -> JetDiffusion | ParticleDiffusion:
    """The :class:`JetDiffusion` or :class:`ParticleDiffusion` saved at ``path``."""
    def read(p):
        arrays, attrs = io.read_h5(p)
        return attrs, arrays

    kind, attrs, arrays = read_saved(path, "diffusion", read, _FORMAT)
    attrs["settings"] = settings_with_defaults(kind, attrs["settings"])
    net = make_net(kind, attrs["settings"], seed=int(attrs.get("fourier_seed", 0)))
    try:
        _assign(net.weights, _stored(arrays, "w"), str(path))
    except ValueError as e:
        raise InputError(path, f"the weights do not fit the settings ({e})", "retrain the model",
                         field="weights") from e
    return from_header(path, attrs, net, (JetDiffusion, ParticleDiffusion))


# --------------------------------------------------------------------------------------------- verbs


def train_jet_model(train: PointCloud, val: PointCloud, settings: dict | None, seed: int, workdir, engine=None,
                    transform: JetTransform | None = None, epoch_callback=None):
    """Train the jet model; returns (:class:`JetDiffusion`, history).

    ``transform`` defaults to a :class:`JetTransform` fitted on ``train``. See
    :func:`fit_score_net` for engines, checkpoints and resumption.
    """
    s = settings_with_defaults("jet_model", settings)
    transform = jet_training_transforms(train, val, transform)
    net, history = fit_score_net(lambda: make_net("jet_model", s, seed), JetData(train, transform),
                                 JetData(val, transform), s, seed, workdir, engine, name="jet model",
                                 fingerprint=data_fingerprint(train, val), epoch_callback=epoch_callback)
    return JetDiffusion(net, transform, s, history), history


def train_particle_model(train: PointCloud, val: PointCloud, settings: dict | None, seed: int, workdir, engine=None,
                         jet_transform: JetTransform | None = None,
                         particle_transform: ParticleTransform | None = None, epoch_callback=None):
    """Train the particle model on the 2N jets of N events; returns (:class:`ParticleDiffusion`, history).

    The transforms default to ones fitted on ``train``; the model's ``max_particles`` is
    that of ``train``. See :func:`fit_score_net` for engines, checkpoints and resumption.
    """
    s = settings_with_defaults("particle_model", settings)
    jet_transform, particle_transform = particle_training_transforms(train, val, jet_transform, particle_transform,
                                                                     s["pt_rel"])
    net, history = fit_score_net(lambda: make_net("particle_model", s, seed),
                                 ParticleData(train, jet_transform, particle_transform),
                                 ParticleData(val, jet_transform, particle_transform), s, seed, workdir, engine,
                                 name="particle model", fingerprint=data_fingerprint(train, val),
                                 epoch_callback=epoch_callback)
    return ParticleDiffusion(net, jet_transform, particle_transform, s, train.max_particles, history), history


def generate(jet_model: JetDiffusion, particle_model: ParticleDiffusion, mjj, max_particles: int, steps: int = 512,
             batch_size: int = 4096, seed: int = 0, writer=None, second_order: bool = True) -> dict:
    """:func:`resonant.generative.generate` with the diffusion models; the result adds "evaluations"
    (network evaluations per event and model)."""
    info = generative.generate(jet_model, particle_model, mjj, max_particles, steps, batch_size, seed, writer,
                               second_order=second_order)
    return {**info, "evaluations": evaluations(steps, second_order)}


# --------------------------------------------------------------------------------------------- workflow

MODELS = (JetDiffusion, ParticleDiffusion)


def configure(threads: int) -> None:
    """TensorFlow's thread pools and op determinism (call before any TensorFlow op)."""
    md.configure(threads=threads)


def train(part: str, train: PointCloud, val: PointCloud, params: dict, seed: int, workdir):
    """(model, writes?) of the workflow's training stage: ``part`` is "jet_model" or "particle_model".

    The engine is ``params["engine"]`` (workers from SLURM when started by srun); only the
    chief writes.
    """
    from .train.keras_distributed import get_engine

    engine = get_engine(params.get("engine", "tf"))
    fit = train_jet_model if part == "jet_model" else train_particle_model
    model, _ = fit(train, val, params[part], seed=seed, workdir=workdir, engine=engine)
    return model, engine.is_chief

