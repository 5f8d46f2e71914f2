"""What the two point-cloud generators (flow matching, diffusion) share, free of any framework.

Both have a jet model (both jets' (pt, eta, phi, m, n) given m_jj) and a particle model
(each jet's constituents given the jet and m_jj), with the same verbs (train, sample,
save, load, generate). A framework module defines, per model, the network and one
method, :meth:`GeneratorModel._integrate`: noise (B, T, F) to data-space samples of the
pre-processed features, given the condition (B, C) and a mask (B, T). Everything
around it lives here once:

* settings with defaults and range checks (:func:`checked_settings`);
* the sampling loops (:meth:`JetModel.sample`, :meth:`ParticleModel.sample`): m_jj
  conditions, seeded noise per batch, chunks of similar multiplicity for the
  particles, the inverse pre-processing, the leading jet first;
* the checks and transforms before training (:func:`jet_training_transforms`,
  :func:`particle_training_transforms`);
* rebuilding a model from a saved file's header (:func:`from_header`);
* streaming generation into the generated-background HDF5 (:func:`generate`).

The workflow reaches a framework module by name (:func:`backend`); each defines
``MODELS`` (its jet and particle classes), ``configure(threads)`` (before any work),
``train(part, train, val, params, seed, workdir)`` -> (model, whether this process
writes it) and ``generate``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from . import io
from .errors import InputError
from .pointcloud import (JET_FIELDS, PARTICLE_FIELDS, JetTransform, ParticleTransform, PointCloud, check_mjj,
                         check_particle_sampling, check_training_cloud, leading_jet_first,
                         mask_from_counts, n_valid, particle_condition, sampled_particles, sampling_chunks)
from .seeds import child as child_seed

log = logging.getLogger(__name__)

KINDS = ("jet_model", "particle_model")
BACKENDS = ("flow_matching", "diffusion")
#: the particle model's condition: the jet's transformed (pt, eta, phi, m, n) and the m_jj condition
N_PARTICLE_CONDITION = len(JET_FIELDS) + 1
#: the particle model's setting of the pT_rel pre-processing: its rule for :func:`checked_settings`
PT_REL_RULE = (str, lambda v: v in ParticleTransform.KINDS, f"one of {', '.join(ParticleTransform.KINDS)}")
#: particle slots per jet that a sampling batch budgets for (LHCO jets average ~50-80 constituents)
SLOTS_PER_JET = 64


def backend(name: str, threads: int | None = None):
    """The framework module of the generator ``name`` (imported on first use: torch or TensorFlow).

    With ``threads``, its thread pools are set first (before any work of the framework).
    """
    import importlib

    if name not in BACKENDS:
        raise ValueError(f"unknown point-cloud generator {name!r} (allowed: {', '.join(BACKENDS)})")
    module = importlib.import_module(f"{__package__}.{name}")
    if threads is not None:
        module.configure(threads)
    return module


def checked_settings(family: str, defaults: dict, rules: dict, kind: str, settings: dict | None) -> dict:
    """``defaults[kind]`` updated by ``settings``; unknown keys or values outside ``rules`` raise ``ValueError``.

    ``rules`` maps a setting to (kind: True integer, False number, ``str`` string; predicate;
    description of the valid values);
    ``family`` names the config section in the messages.
    """
    if kind not in defaults:
        raise ValueError(f"unknown {family} settings kind {kind!r} (allowed: {', '.join(defaults)})")
    settings = dict(settings or {})
    unknown = sorted(set(settings) - set(defaults[kind]))
    if unknown:
        raise ValueError(f"unknown {family}.{kind} setting(s) {', '.join(unknown)} "
                         f"(allowed: {', '.join(defaults[kind])})")
    out = {**defaults[kind], **settings}
    bad = [f"{k}={v!r} (must be {rules[k][2]})" for k, v in out.items() if not _valid(v, *rules[k][:2])]
    if bad:
        raise ValueError(f"{family}.{kind}: bad value(s) {'; '.join(bad)}")
    return out


def _valid(value, kind, ok) -> bool:
    """Whether ``value`` is of ``kind`` (True: an integer, False: a number, ``str``: a string) and ``ok``."""
    if kind is str:
        return isinstance(value, str) and bool(ok(value))
    if isinstance(value, bool) or not isinstance(value, (int, np.integer) if kind else (int, float, np.number)):
        return False
    return bool(ok(value))


def noise(seed: int, shape) -> np.ndarray:
    """Standard normal float32 noise of ``shape`` from ``seed`` (the start of every sampled batch)."""
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


class GeneratorModel:
    """A trained network with its settings and history; subclasses say how to integrate and save it."""

    kind = ""
    family = ""  # the config section of its settings, e.g. "flow_matching"
    default_steps = 1  # of sampling, when not given

    def __init__(self, net, settings: dict, history: dict | None = None):
        self.net = net
        self.settings = self.checked(self.kind, settings)
        self.history = dict(history or {})

    @staticmethod
    def checked(kind: str, settings: dict | None) -> dict:
        """The complete settings of ``kind`` (the framework module's ``settings_with_defaults``)."""
        raise NotImplementedError

    def _integrate(self, z: np.ndarray, cond: np.ndarray, mask: np.ndarray, steps: int, **options) -> np.ndarray:
        """Samples (B, T, F) of the pre-processed features from noise ``z`` given ``cond`` (B, C), ``mask`` (B, T)."""
        raise NotImplementedError

    def transforms(self) -> dict:
        raise NotImplementedError

    def extra(self) -> dict:
        """What a saved file holds besides weights, settings and transforms."""
        return {}

    def header(self) -> dict:
        """The saved file's description of the model (everything but the weights)."""
        return {"kind": self.kind, "settings": self.settings, "transforms": self.transforms(), **self.extra()}

    def summary(self, n_parameters: int) -> dict:
        """The JSON written beside a saved model."""
        return {"kind": self.kind, "settings": self.settings, "history": self.history, **self.extra(),
                "n_parameters": int(n_parameters)}

    @classmethod
    def load(cls, path):
        """The model saved at ``path`` by this class's framework (must be of this class's kind)."""
        return cls.of_kind(backend(cls.family).load(path), path)

    @classmethod
    def of_kind(cls, model, path):
        """``model`` (loaded from ``path``) if it is an instance of ``cls``; else a clear error."""
        if not isinstance(model, cls):
            raise InputError(path, f"holds a {model.kind}, not a {cls.kind}", "pass the other model file",
                             field="kind")
        return model


class JetModel(GeneratorModel):
    """The jet model: samples both jets' (pt, eta, phi, m, n) given m_jj."""

    kind = "jet_model"

    def __init__(self, net, transform: JetTransform, settings: dict, history: dict | None = None):
        super().__init__(net, settings, history)
        self.transform = transform

    def transforms(self):
        return {"jets": self.transform.to_dict()}

    def sample(self, mjj, steps: int | None = None, seed: int = 0, batch_size: int = 4096, **options) -> np.ndarray:
        """Jets float32 (N, 2, 5) in physical units for the m_jj values ``mjj`` (N,).

        Batch i of ``batch_size`` events starts from its own noise (seeded by ``seed`` and i)
        and is integrated in ``steps`` steps (default: the family's). n is rounded (>= 1); the jets of an event are
        ordered by pT (the leading jet first). ``options`` go to the integrator.
        """
        mjj, steps = check_mjj(mjj), self.default_steps if steps is None else steps
        cond = self.transform.mjj_condition(mjj)[:, None].astype(np.float32)
        out = np.empty((len(mjj), 2, len(JET_FIELDS)), np.float32)
        for i, start in enumerate(range(0, len(mjj), int(batch_size))):
            stop = min(start + int(batch_size), len(mjj))
            z = noise(child_seed(seed, i), (stop - start, 2, len(JET_FIELDS)))
            out[start:stop] = self._integrate(z, cond[start:stop], np.ones((stop - start, 2), np.float32), steps,
                                              **options)
        return leading_jet_first(self.transform.inverse(out, mjj))


class ParticleModel(GeneratorModel):
    """The particle model: samples each jet's constituents given the jets and m_jj."""

    kind = "particle_model"

    def __init__(self, net, jet_transform: JetTransform, particle_transform: ParticleTransform, settings: dict,
                 max_particles: int, history: dict | None = None):
        super().__init__(net, settings, history)
        self.jet_transform, self.particle_transform = jet_transform, particle_transform
        self.max_particles = int(max_particles)

    def transforms(self):
        return {"jets": self.jet_transform.to_dict(), "particles": self.particle_transform.to_dict()}

    def extra(self):
        return {"max_particles": self.max_particles}

    def sample(self, jets, mjj, max_particles: int | None = None, steps: int | None = None, seed: int = 0,
               batch_size: int = 4096, **options) -> tuple[np.ndarray, np.ndarray]:
        """(particles float32 (N, 2, P, 3), mask bool (N, 2, P)) for ``jets`` (N, 2, 5) and ``mjj`` (N,).

        P = ``max_particles`` (default: that of the training data). Jet j gets
        ``pointcloud.n_valid(jets, P)`` particles, in the first slots, ordered by
        decreasing pT_rel; padded slots are 0. The clouds are integrated in chunks of
        similar multiplicity, each cut to its largest cloud and holding at most
        2 ``batch_size`` x ``SLOTS_PER_JET`` particle slots (memory stays that of
        ``batch_size`` events of average multiplicity ``SLOTS_PER_JET``, whatever P);
        chunk i's noise is seeded by ``seed`` and i.
        """
        p = self.max_particles if max_particles is None else max_particles
        steps = self.default_steps if steps is None else steps
        jets, mjj, p = check_particle_sampling(jets, mjj, p)
        counts = n_valid(jets, p).reshape(-1)
        cond = particle_condition(jets, mjj, self.jet_transform).reshape(-1, N_PARTICLE_CONDITION)
        x = np.zeros((len(counts), p, len(PARTICLE_FIELDS)), np.float32)
        order = np.argsort(counts, kind="stable")
        for i, (start, stop) in enumerate(sampling_chunks(counts[order], 2 * int(batch_size) * SLOTS_PER_JET)):
            sel = order[start:stop]
            width = int(counts[sel].max())
            mask = mask_from_counts(counts[sel], width).astype(np.float32)
            z = noise(child_seed(seed, i), (len(sel), width, len(PARTICLE_FIELDS))) * mask[..., None]
            x[sel, :width] = self._integrate(z, cond[sel], mask, steps, **options)
        return sampled_particles(x, counts, self.particle_transform)


def read_saved(path, what: str, read, fmt: int):
    """(kind, header, contents) of a saved model file, or an error naming the file and the fix.

    ``read(path)`` returns (header dict, contents); ``what`` names the generator in the
    messages; ``fmt`` is the file format version the header must have.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file does not exist", f"run the {what} training stage")
    try:
        header, contents = read(path)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same advice
        raise InputError(path, f"not a readable {what} model ({getattr(e, 'problem', e)})",
                         "delete it and rerun the training") from e
    if not isinstance(header, dict) or header.get("format") != fmt:
        raise InputError(path, f"not a {what} model file of this version",
                         "retrain the model with this version of the workflow", field="format")
    kind = header.get("kind")
    if kind not in KINDS:
        raise InputError(path, f"unknown model kind {kind!r}", "retrain the model", field="kind")
    return kind, header, contents


def from_header(path, header: dict, net, classes: tuple[type, type]) -> JetModel | ParticleModel:
    """The model of ``classes`` = (jet class, particle class) that a saved file's ``header`` describes.

    The training history comes from the JSON beside ``path`` when it is there.
    """
    side = Path(path).with_suffix(".json")
    history = io.read_json(side).get("history", {}) if side.exists() else {}
    jet_cls, particle_cls = classes
    t = header["transforms"]
    if header["kind"] == "jet_model":
        return jet_cls(net, JetTransform.from_dict(t["jets"]), header["settings"], history)
    return particle_cls(net, JetTransform.from_dict(t["jets"]), ParticleTransform.from_dict(t["particles"]),
                        header["settings"], header["max_particles"], history)


# --------------------------------------------------------------------------------------------- training inputs

class JetExamples:
    """Events as the jet models see them: both jets transformed, n dequantised, given the m_jj condition.

    The framework modules add their randomness and tensors (the uniform draws of the
    dequantisation come from the caller).
    """

    def __init__(self, cloud: PointCloud, transform: JetTransform):
        self.jets, self.mjj, self.transform = cloud.jets, cloud.mjj, transform
        self.cond = transform.mjj_condition(cloud.mjj)[:, None]

    def __len__(self):
        return len(self.mjj)

    def jet_tokens(self, idx: np.ndarray, uniform: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(jets transformed (B, 2, 5), condition (B, 1)) of events ``idx``; n is shifted by ``uniform`` - 0.5
        (``uniform``: (B, 2) in [0, 1))."""
        jets = self.jets[idx].astype(np.float64)
        jets[..., JET_FIELDS.index("n")] += np.asarray(uniform, np.float64) - 0.5
        return self.transform.transform(jets, self.mjj[idx]), self.cond[idx]


class ParticleExamples:
    """Jets as clouds (event i gives clouds 2i, 2i+1) of transformed constituents, given the jet and m_jj."""

    def __init__(self, cloud: PointCloud, jet_transform: JetTransform, particle_transform: ParticleTransform):
        p = cloud.max_particles
        self.particles = cloud.particles.reshape(-1, p, len(PARTICLE_FIELDS))
        self.mask = np.asarray(cloud.mask, bool).reshape(-1, p)
        self.cond = particle_condition(cloud.jets, cloud.mjj, jet_transform).reshape(-1, N_PARTICLE_CONDITION)
        self.transform = particle_transform

    def __len__(self):
        return len(self.mask)

    def clouds(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(particles transformed (B, W, 3), condition (B, C), mask bool (B, W)) of clouds ``idx``, cut to the W
        particle slots that any of them uses."""
        mask = self.mask[idx]
        used = np.flatnonzero(mask.any(axis=0))
        width = int(used[-1]) + 1 if len(used) else 1
        mask = mask[:, :width]
        return self.transform.transform(self.particles[idx, :width], mask), self.cond[idx], mask


def jet_training_transforms(train: PointCloud, val: PointCloud, transform: JetTransform | None) -> JetTransform:
    """Check the training clouds; ``transform`` or a :class:`JetTransform` fitted on ``train``."""
    check_training_cloud(train, "train")
    check_training_cloud(val, "val")
    return transform or JetTransform().fit(train.jets, train.mjj)


def particle_training_transforms(train: PointCloud, val: PointCloud, jet_transform: JetTransform | None,
                                 particle_transform: ParticleTransform | None, pt_rel: str = "log1m"):
    """Check the training clouds; (jet transform, particle transform), each given or fitted on ``train``.

    A fitted particle transform uses the ``pt_rel`` pre-processing (see :class:`ParticleTransform`).
    """
    jet_transform = jet_training_transforms(train, val, jet_transform)
    if val.max_particles != train.max_particles:
        raise ValueError(f"train has {train.max_particles} particle slots, val {val.max_particles}")
    particle_transform = particle_transform or ParticleTransform(pt_rel).fit(train.particles, train.mask)
    return jet_transform, particle_transform


# --------------------------------------------------------------------------------------------- generation

def generate(jet_model: JetModel, particle_model: ParticleModel, mjj, max_particles: int, steps: int,
             batch_size: int = 4096, seed: int = 0, writer=None, **options) -> dict:
    """Generate one event per value of ``mjj`` and write them, batch by batch, to ``writer``.

    ``writer`` is an open :class:`~resonant.pointcloud.GeneratedWriter` (memory stays that
    of one batch). Batch b's jets and particles use seeds derived from ``seed`` and b;
    ``options`` go to both models' integrators. Logs one line per batch; returns
    {"events", "seconds", "events_per_second"}.
    """
    if writer is None:
        raise ValueError("generate needs an open pointcloud.GeneratedWriter")
    if getattr(writer, "max_particles", max_particles) != max_particles:
        raise ValueError(f"the writer has {writer.max_particles} particle slots, generate was asked for "
                         f"{max_particles}")
    mjj = check_mjj(mjj)
    batch_size = int(batch_size)
    n_batches = -(-len(mjj) // batch_size)
    t0 = time.perf_counter()
    for b in range(n_batches):
        tb = time.perf_counter()
        m = mjj[b * batch_size:(b + 1) * batch_size]
        jets = jet_model.sample(m, steps=steps, seed=child_seed(seed, b, 0), batch_size=batch_size, **options)
        particles, mask = particle_model.sample(jets, m, max_particles, steps=steps, seed=child_seed(seed, b, 1),
                                                batch_size=batch_size, **options)
        cloud = PointCloud(jets, particles, mask, m.astype(np.float32))
        bad = [k for k in ("jets", "particles") if not np.isfinite(getattr(cloud, k)).all()]
        if bad:
            raise FloatingPointError(f"generated batch {b} has non-finite {' and '.join(bad)}: the "
                                     f"{jet_model.family} model is unstable; retrain it or sample with more steps")
        writer.write(cloud)
        dt = time.perf_counter() - tb
        log.info("generated batch %d/%d: %d events in %.1fs (%.0f events/s)", b + 1, n_batches, len(m), dt,
                 len(m) / max(dt, 1e-9))
    seconds = time.perf_counter() - t0
    return {"events": len(mjj), "seconds": seconds, "events_per_second": len(mjj) / max(seconds, 1e-9)}
