"""The VAE of the latent-space bump hunt (Keras 3 on TensorFlow).

- :class:`MaxAbsScaling`: x / max|x| per feature, fitted on the training data
  and saved inside the model (a non-trainable weight), so a saved model takes
  raw features;
- :class:`VAE`: encoder (``layers`` x ``hidden`` SeLU, linear mean and
  log-variance heads) and decoder (the same, linear output); loss
  ``alpha * MSE + KL`` per event, averaged over the batch. Training samples
  z = mean + sigma * eps; validation reconstructs from the mean (a
  deterministic loss). The metrics ``loss``, ``mse`` and ``kl`` are batch means;
  ``kl`` of the validation data drives the KL-peak early stopping;
- :class:`MassDecoder`: the characterisation decoder: (z, standardised m_jj)
  -> scaled features, trained on z ~ N(mean, sigma) of a frozen encoder and
  m ~ N(m_jj, width * m_jj), plain MSE.

Both models train with their own ``train_step`` traced once into a TensorFlow
graph (:func:`epoch_runner`; Keras' ``fit`` traces more and rebuilds a data
pipeline every epoch, which costs more than an epoch of these small models).
The epoch loop, the per-epoch log and the KL-peak rule live in :mod:`resonant.vae`.
"""

from __future__ import annotations

import os

os.environ["KERAS_BACKEND"] = "tensorflow"

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import ops  # noqa: E402

PACKAGE = "resonant"


def configure(threads: int = 1, deterministic: bool = True) -> None:
    """TensorFlow thread pools and op determinism; call before the first TensorFlow op.

    If the runtime is already initialised the thread counts cannot change any
    more: that is silently accepted (tests and notebooks set them themselves).
    """
    threads = max(1, int(threads))
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        pass
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def seed_all(seed: int) -> None:
    """Python, NumPy, TensorFlow and Keras seeds: initial weights and shuffling follow ``seed``."""
    keras.utils.set_random_seed(int(seed) % 2**31)


class BatchStream:
    """Indices of training batches: epochs of whole passes, or of a number of full batches.

    ``epoch(n, batch_size, rng)`` yields the batches of one pass in the order of
    ``rng.permutation(n)`` (the last one may be smaller). ``epoch(n, batch_size,
    rng, steps)`` yields ``steps`` full batches from a stream of permutations
    that carries on from one call to the next: an epoch may cover part of a
    pass or several, and passes follow each other without a gap (a batch may
    join the end of one permutation to the start of the next).
    """

    def __init__(self):
        self.n, self.perm, self.pos = None, None, 0

    def epoch(self, n: int, batch_size: int, rng: np.random.Generator, steps: int | None = None):
        if steps is None:
            perm = rng.permutation(n)
            for i in range(0, n, batch_size):
                yield perm[i:i + batch_size]
            return
        b = min(int(batch_size), n)
        if self.n != n:
            self.n, self.perm, self.pos = n, rng.permutation(n), 0
        for _ in range(int(steps)):
            if self.pos + b > len(self.perm):  # the rest of this permutation, then the next one
                self.perm, self.pos = np.r_[self.perm[self.pos:], rng.permutation(n)], 0
            self.pos += b
            yield self.perm[self.pos - b:self.pos]


def epoch_runner(model: keras.Model, *widths: int):
    """A function ``run(arrays, batch_size, rng, steps=None) -> logs`` training ``model`` for one epoch.

    ``arrays`` are float32 arrays with the same first dimension and the given
    ``widths`` (one array: x; two: (x, y)). An epoch is one pass over the
    arrays (``steps=None``) or ``steps`` optimizer steps on full batches
    (:class:`BatchStream`). ``model.train_step`` is traced once, for batches of
    any size. The model must be compiled (its optimizer is built here).
    ``logs`` are the means of the model's metrics over the epoch.
    """
    specs = tuple(tf.TensorSpec([None, w], tf.float32) for w in widths)
    model.optimizer.build(model.trainable_variables)
    step = tf.function(model.train_step, input_signature=[specs if len(specs) > 1 else specs[0]], autograph=False)
    stream = BatchStream()

    def run(arrays, batch_size: int, rng: np.random.Generator, steps: int | None = None) -> dict:
        for m in model.metrics:
            m.reset_state()
        logs = {}
        for idx in stream.epoch(len(arrays[0]), batch_size, rng, steps):
            batch = tuple(tf.constant(a[idx]) for a in arrays)
            logs = step(batch if len(batch) > 1 else batch[0])
        return {k: float(v) for k, v in logs.items()}

    return run


def mlp(n_in: int, n_out, hidden: int, layers: int, name: str, activation: str = "selu") -> keras.Model:
    """``layers`` x ``hidden`` dense layers, then one linear head per entry of ``n_out`` (an int or a dict)."""
    x_in = keras.Input(shape=(n_in,), name=f"{name}_in")
    h = x_in
    for i in range(layers):
        h = keras.layers.Dense(hidden, activation=activation, name=f"{name}_dense{i}")(h)
    if isinstance(n_out, dict):
        out = {k: keras.layers.Dense(n, name=f"{name}_{k}")(h) for k, n in n_out.items()}
    else:
        out = keras.layers.Dense(n_out, name=f"{name}_out")(h)
    return keras.Model(x_in, out, name=name)


def kl_per_event(mean, log_var):
    """KL divergence of N(mean, exp(log_var)) to N(0, 1), summed over the latent dimensions."""
    return 0.5 * ops.sum(ops.square(mean) + ops.exp(log_var) - 1.0 - log_var, axis=-1)


def _x(data):
    """The features of a batch given as x, (x,), or (x, y)."""
    return data[0] if isinstance(data, (tuple, list)) else data


@keras.saving.register_keras_serializable(package=PACKAGE)
class MaxAbsScaling(keras.layers.Layer):
    """x / scale, with scale = max |x| of the training data per feature (1 where a feature is all zero)."""

    def __init__(self, n_features: int, **kwargs):
        super().__init__(**kwargs)
        self.n_features = int(n_features)
        self.scale = self.add_weight(shape=(self.n_features,), initializer="ones", trainable=False, name="scale")

    def fit(self, X) -> "MaxAbsScaling":
        X = np.asarray(X, np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"MaxAbsScaling: expected an (n, {self.n_features}) array, got shape {X.shape}")
        if not np.all(np.isfinite(X)):
            raise ValueError("MaxAbsScaling: the training data has non-finite features; clean them first")
        scale = np.abs(X).max(axis=0) if len(X) else np.ones(self.n_features)
        self.scale.assign(np.where(scale > 0, scale, 1.0).astype(np.float32))
        return self

    @property
    def values(self) -> np.ndarray:
        return np.asarray(keras.ops.convert_to_numpy(self.scale), np.float64)

    def call(self, x):
        return x / self.scale

    def get_config(self):
        return {**super().get_config(), "n_features": self.n_features}


@keras.saving.register_keras_serializable(package=PACKAGE)
class VAE(keras.Model):
    """Encoder x -> (mean, log_var), decoder z -> x (in MaxAbs-scaled units)."""

    def __init__(self, n_features: int, latent_dim: int = 1, hidden: int = 64, layers: int = 3,
                 alpha: float = 5000.0, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.n_features, self.latent_dim = int(n_features), int(latent_dim)
        self.hidden, self.n_layers, self.alpha, self.seed = int(hidden), int(layers), float(alpha), int(seed)
        self.scaling = MaxAbsScaling(self.n_features, name="scaling")
        self.encoder = mlp(self.n_features, {"mean": self.latent_dim, "log_var": self.latent_dim}, self.hidden,
                           self.n_layers, "encoder")
        self.decoder = mlp(self.latent_dim, self.n_features, self.hidden, self.n_layers, "decoder")
        self.noise = keras.random.SeedGenerator(self.seed)
        self.trackers = {k: keras.metrics.Mean(name=k) for k in ("loss", "mse", "kl")}
        self.built = True  # every layer is built above

    def build(self, input_shape=None):
        self.built = True

    @property
    def metrics(self):
        return list(self.trackers.values())

    def encode(self, x):
        """(mean, log_var) of raw features ``x``."""
        out = self.encoder(self.scaling(x))
        return out["mean"], out["log_var"]

    def call(self, x, training=False):
        """The reconstruction of ``x`` in scaled units (from the latent mean unless training)."""
        mean, log_var = self.encode(x)
        z = self._sample(mean, log_var) if training else mean
        return self.decoder(z)

    def _sample(self, mean, log_var):
        eps = keras.random.normal(ops.shape(mean), seed=self.noise)
        return mean + ops.exp(0.5 * log_var) * eps

    def _loss_terms(self, x, training: bool):
        xs = self.scaling(x)
        out = self.encoder(xs, training=training)
        mean, log_var = out["mean"], out["log_var"]
        z = self._sample(mean, log_var) if training else mean
        mse = ops.mean(ops.square(xs - self.decoder(z, training=training)), axis=-1)
        kl = kl_per_event(mean, log_var)
        return mse, kl

    def _update(self, loss, mse, kl):
        self.trackers["loss"].update_state(loss)
        self.trackers["mse"].update_state(ops.mean(mse))
        self.trackers["kl"].update_state(ops.mean(kl))
        return {k: m.result() for k, m in self.trackers.items()}

    def train_step(self, data):
        x = _x(data)
        with tf.GradientTape() as tape:
            mse, kl = self._loss_terms(x, training=True)
            loss = ops.mean(self.alpha * mse + kl)
        weights = self.trainable_weights
        self.optimizer.apply_gradients(zip(tape.gradient(loss, weights), weights))
        return self._update(loss, mse, kl)

    def test_step(self, data):
        mse, kl = self._loss_terms(_x(data), training=False)
        return self._update(ops.mean(self.alpha * mse + kl), mse, kl)

    def get_config(self):
        return {**super().get_config(), "n_features": self.n_features, "latent_dim": self.latent_dim,
                "hidden": self.hidden, "layers": self.n_layers, "alpha": self.alpha, "seed": self.seed}

    # ------------------------------------------------------------ numpy helpers
    def encode_numpy(self, X, batch_size: int = 65536) -> tuple[np.ndarray, np.ndarray]:
        """(mean, log_var) arrays of raw features ``X`` (N, n_features)."""
        X = np.asarray(X, np.float32)
        means, log_vars = [], []
        for i in range(0, max(len(X), 1), batch_size):
            m, lv = self.encode(X[i:i + batch_size])
            means.append(ops.convert_to_numpy(m))
            log_vars.append(ops.convert_to_numpy(lv))
        return np.concatenate(means).astype(np.float64), np.concatenate(log_vars).astype(np.float64)

    def loss_terms_numpy(self, X, batch_size: int = 65536) -> tuple[np.ndarray, np.ndarray]:
        """Per-event (MSE of the reconstruction from the latent mean, KL) of raw features ``X``."""
        X = np.asarray(X, np.float32)
        mse, kl = [], []
        for i in range(0, max(len(X), 1), batch_size):
            a, b = self._loss_terms(X[i:i + batch_size], training=False)
            mse.append(ops.convert_to_numpy(a))
            kl.append(ops.convert_to_numpy(b))
        return np.concatenate(mse).astype(np.float64), np.concatenate(kl).astype(np.float64)

    def kl_numpy(self, X) -> np.ndarray:
        """Per-event KL divergence of the encoding of ``X`` to the prior: the anomaly score."""
        mean, log_var = self.encode_numpy(X)
        return 0.5 * np.sum(mean**2 + np.exp(log_var) - 1.0 - log_var, axis=-1)


@keras.saving.register_keras_serializable(package=PACKAGE)
class MassDecoder(keras.Model):
    """(z, m) -> scaled features; m is m_jj standardised with the training mean and std.

    Training input: one array with the columns [mean (d), log_var (d), m,
    m_sigma]: the frozen encoder's latent mean and log-variance, the
    standardised m_jj and its gaussian width in the same units (see
    :func:`mass_decoder_inputs`); target: the scaled features. Training draws
    z ~ N(mean, exp(log_var / 2)) and m ~ N(m, m_sigma) at every step; without
    ``training`` the means are decoded.
    """

    def __init__(self, n_features: int, latent_dim: int = 1, hidden: int = 64, layers: int = 3, seed: int = 0,
                 **kwargs):
        super().__init__(**kwargs)
        self.n_features, self.latent_dim = int(n_features), int(latent_dim)
        self.hidden, self.n_layers, self.seed = int(hidden), int(layers), int(seed)
        self.net = mlp(self.latent_dim + 1, self.n_features, self.hidden, self.n_layers, "mass_decoder")
        self.noise = keras.random.SeedGenerator(self.seed)
        self.tracker = keras.metrics.Mean(name="loss")
        self.built = True

    @property
    def input_width(self) -> int:
        return 2 * self.latent_dim + 2

    def build(self, input_shape=None):
        self.built = True

    @property
    def metrics(self):
        return [self.tracker]

    def call(self, u, training=False):
        d = self.latent_dim
        z, log_var, m, m_sigma = u[:, :d], u[:, d:2 * d], u[:, 2 * d:2 * d + 1], u[:, 2 * d + 1:]
        if training:
            z = z + ops.exp(0.5 * log_var) * keras.random.normal(ops.shape(z), seed=self.noise)
            m = m + m_sigma * keras.random.normal(ops.shape(m), seed=self.noise)
        return self.net(ops.concatenate([z, m], axis=-1), training=training)

    def train_step(self, data):
        u, target = data
        with tf.GradientTape() as tape:
            loss = ops.mean(ops.square(target - self(u, training=True)))
        weights = self.trainable_weights
        self.optimizer.apply_gradients(zip(tape.gradient(loss, weights), weights))
        self.tracker.update_state(loss)
        return {"loss": self.tracker.result()}

    def mse_numpy(self, u, target) -> float:
        """Mean squared error decoding the means (no sampling)."""
        return float(np.mean((ops.convert_to_numpy(self(np.asarray(u, np.float32))) - target) ** 2))

    def decode_numpy(self, z, m, batch_size: int = 65536) -> np.ndarray:
        """Scaled features at latent points ``z`` (N, d) and standardised masses ``m`` (N,)."""
        zm = np.c_[np.asarray(z, np.float32).reshape(len(m), -1), np.asarray(m, np.float32).reshape(-1, 1)]
        return np.concatenate([ops.convert_to_numpy(self.net(zm[i:i + batch_size]))
                               for i in range(0, max(len(zm), 1), batch_size)]).astype(np.float64)

    def get_config(self):
        return {**super().get_config(), "n_features": self.n_features, "latent_dim": self.latent_dim,
                "hidden": self.hidden, "layers": self.n_layers, "seed": self.seed}


def mass_decoder_inputs(mean, log_var, mjj, m_mean: float, m_std: float, width: float) -> np.ndarray:
    """The training input of :class:`MassDecoder`: [mean, log_var, (m_jj - m_mean) / m_std, width m_jj / m_std]."""
    mjj = np.asarray(mjj, np.float64)
    return np.c_[mean, log_var, (mjj - m_mean) / m_std, width * mjj / m_std].astype(np.float32)
