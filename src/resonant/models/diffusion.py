"""Score networks of the diffusion generator (Keras 3 on TensorFlow): DeepSets with attention.

One network class, :class:`ScoreNet`, serves both models of the diffusion branch:

* jet model: the two jets' transformed (pt, eta, phi, m, n) as a set of two tokens
  (5 features each, no padding) given the m_jj condition (1 value);
* particle model: a jet's constituents as a set of up to P tokens (3 features,
  padded slots masked) given the jet's transformed kinematics and the m_jj
  condition.

It predicts the diffusion velocity v of every token (see :mod:`resonant.diffusion`)
from the noisy tokens ``x`` (B, T, F), the diffusion time ``t`` (B,) in [0, 1], the
condition ``cond`` (B, C) and the token mask (B, T). Layout (after the published
``DeepSetsAtt``, Mikuni et al.):

* time: random Fourier features [sin 2 pi W t, cos 2 pi W t] (W ~ N(0, 16^2), fixed,
  ``fourier_dim`` features), then two dense layers; condition: one dense layer;
  both concatenated and mixed by a dense layer into a ``width`` vector;
* tokens: a dense embedding, concatenated with the conditioning vector, two dense
  layers (the DeepSets part), then ``blocks`` pre-LayerNorm transformer blocks
  (``keras.layers.MultiHeadAttention`` with ``heads`` heads and an attention mask
  that lets real tokens attend to real tokens only; an MLP of 4 ``width``);
* output: LayerNorm, concatenated with the DeepSets embedding (a skip connection),
  a dense layer of 2 ``width`` and a linear layer to F features; padded tokens output 0.

No positional encoding: the network is permutation-equivariant in the tokens, and
padded tokens (whatever their values, however many) do not change the real tokens'
outputs. Activations LeakyReLU(0.01) (GELU in the transformer MLP), as published.
"""

from __future__ import annotations

import numpy as np

from .vae import PACKAGE, configure, seed_all  # noqa: F401  (sets KERAS_BACKEND=tensorflow before keras loads)

import keras  # noqa: E402
from keras import ops  # noqa: E402

FOURIER_SCALE = 16.0  # standard deviation of the random Fourier frequencies (t in [0, 1])
LEAKY_SLOPE = 0.01
MLP_RATIO = 4


def _leaky(x):
    return ops.leaky_relu(x, negative_slope=LEAKY_SLOPE)


@keras.saving.register_keras_serializable(package=PACKAGE)
class FourierTime(keras.layers.Layer):
    """Random Fourier features of the diffusion time: [sin(2 pi W t), cos(2 pi W t)], W fixed.

    W (``dim`` / 2 frequencies, N(0, ``scale``^2)) is drawn from ``seed`` with NumPy and
    stored as a non-trainable weight, so it is saved with the model.
    """

    def __init__(self, dim: int, scale: float = FOURIER_SCALE, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        if dim < 2 or dim % 2:
            raise ValueError(f"fourier_dim must be an even number >= 2, got {dim}")
        self.dim, self.scale, self.seed = int(dim), float(scale), int(seed)
        freq = np.random.default_rng([self.seed, 0xF0]).normal(0.0, self.scale, self.dim // 2).astype(np.float32)
        self.freq = self.add_weight(shape=(self.dim // 2,), initializer=keras.initializers.Constant(freq),
                                    trainable=False, name="frequencies")
        self.built = True

    def call(self, t):
        angle = 2.0 * np.pi * ops.reshape(ops.cast(t, "float32"), (-1, 1)) * self.freq[None, :]
        return ops.concatenate([ops.sin(angle), ops.cos(angle)], axis=-1)

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "scale": self.scale, "seed": self.seed}


@keras.saving.register_keras_serializable(package=PACKAGE)
class TransformerBlock(keras.layers.Layer):
    """Pre-LayerNorm transformer block over masked tokens: x + MHA(LN x), then + MLP(LN x); padded rows 0."""

    def __init__(self, width: int, heads: int, **kwargs):
        super().__init__(**kwargs)
        self.width, self.heads = int(width), int(heads)
        self.norm1 = keras.layers.LayerNormalization(epsilon=1e-6)
        self.attn = keras.layers.MultiHeadAttention(num_heads=self.heads, key_dim=max(1, self.width // self.heads))
        self.norm2 = keras.layers.LayerNormalization(epsilon=1e-6)
        self.mlp1 = keras.layers.Dense(MLP_RATIO * self.width, activation="gelu")
        self.mlp2 = keras.layers.Dense(self.width)

    def build(self, input_shape=None):
        tokens = (None, None, self.width)
        self.norm1.build(tokens)
        self.attn.build(tokens, tokens)
        self.norm2.build(tokens)
        self.mlp1.build(tokens)
        self.mlp2.build((None, None, MLP_RATIO * self.width))
        self.built = True

    def call(self, x, mask, attention_mask):
        h = self.norm1(x)
        x = x + self.attn(h, h, attention_mask=attention_mask)
        x = x + self.mlp2(self.mlp1(self.norm2(x)))
        return x * mask[..., None]

    def get_config(self):
        return {**super().get_config(), "width": self.width, "heads": self.heads}


@keras.saving.register_keras_serializable(package=PACKAGE)
class ScoreNet(keras.Model):
    """v(x_t, t, cond) of a set of tokens; ``call((x, t, cond, mask))`` -> (B, T, F) (see the module docstring)."""

    def __init__(self, n_features: int, n_condition: int, width: int = 128, blocks: int = 6, heads: int = 2,
                 fourier_dim: int = 64, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.n_features, self.n_condition = int(n_features), int(n_condition)
        self.width, self.blocks, self.heads = int(width), int(blocks), int(heads)
        self.fourier_dim, self.seed = int(fourier_dim), int(seed)
        w = self.width
        self.fourier = FourierTime(self.fourier_dim, seed=self.seed, name="fourier_time")
        self.time1 = keras.layers.Dense(2 * w, name="time_dense1")
        self.time2 = keras.layers.Dense(w, name="time_dense2")
        self.cond1 = keras.layers.Dense(w, name="cond_dense")
        self.mix = keras.layers.Dense(w, name="cond_mix")
        self.embed = keras.layers.Dense(w, name="token_embed")
        self.set1 = keras.layers.Dense(w, name="deepsets_dense1")
        self.set2 = keras.layers.Dense(w, name="deepsets_dense2")
        self.block_layers = [TransformerBlock(w, self.heads, name=f"block{i}") for i in range(self.blocks)]
        self.out_norm = keras.layers.LayerNormalization(epsilon=1e-6, name="out_norm")
        self.out1 = keras.layers.Dense(2 * w, name="out_dense")
        self.out2 = keras.layers.Dense(self.n_features, name="out_linear")

    def build(self, input_shape=None):
        """Create every weight from the settings alone (the input shapes follow from them)."""
        w = self.width
        for layer, shape in ((self.fourier, None), (self.time1, (None, self.fourier_dim)), (self.time2, (None, 2 * w)),
                             (self.cond1, (None, self.n_condition)), (self.mix, (None, 2 * w)),
                             (self.embed, (None, None, self.n_features)), (self.set1, (None, None, 2 * w)),
                             (self.set2, (None, None, w)), *((b, None) for b in self.block_layers),
                             (self.out_norm, (None, None, w)), (self.out1, (None, None, 2 * w)),
                             (self.out2, (None, None, 2 * w))):
            if not layer.built:
                layer.build(shape)
        self.built = True

    def call(self, inputs, training=False):
        x, t, cond, mask = inputs
        x = ops.cast(x, "float32")
        mask = ops.cast(mask, "float32")
        c = _leaky(self.time2(_leaky(self.time1(self.fourier(t)))))
        c = _leaky(self.mix(ops.concatenate([c, _leaky(self.cond1(ops.cast(cond, "float32")))], axis=-1)))
        h = _leaky(self.embed(x))
        c_tokens = ops.broadcast_to(c[:, None, :], (ops.shape(h)[0], ops.shape(h)[1], self.width))
        skip = self.set2(_leaky(self.set1(ops.concatenate([h, c_tokens], axis=-1))))
        attention_mask = ops.cast(mask[:, :, None] * mask[:, None, :], "bool")
        h = skip * mask[..., None]
        for block in self.block_layers:
            h = block(h, mask, attention_mask)
        h = _leaky(self.out1(ops.concatenate([self.out_norm(h), skip], axis=-1)))
        return self.out2(h) * mask[..., None]

    def get_config(self):
        return {**super().get_config(), "n_features": self.n_features, "n_condition": self.n_condition,
                "width": self.width, "blocks": self.blocks, "heads": self.heads, "fourier_dim": self.fourier_dim,
                "seed": self.seed}


def build_score_net(n_features: int, n_condition: int, width: int, blocks: int, heads: int, fourier_dim: int,
                    seed: int = 0) -> ScoreNet:
    """A :class:`ScoreNet` with its weights created.

    Trainable weights are initialised from Keras' global seed (see :func:`seed_all`);
    the Fourier frequencies from ``seed``.
    """
    net = ScoreNet(n_features, n_condition, width=width, blocks=blocks, heads=heads, fourier_dim=fourier_dim,
                   seed=seed)
    net.build()
    return net


def n_parameters(net: keras.Model) -> int:
    """Number of trainable parameters."""
    return int(sum(np.prod(v.shape) for v in net.trainable_weights))
