"""Point clouds of dijet events: dense arrays, the generated-background HDF5, invertible pre-processing.

Shared by every branch that works on jets and their constituents (the
flow-matching and diffusion generators, the point-cloud classifier, the
contrastive encoder's tokens). An event is

- ``jets``      float32 (N, 2, 5): pt, eta, phi, m, n of the two leading jets (j1 leading in pT);
- ``particles`` float32 (N, 2, P, 3): pT_rel, deta, dphi of each jet's leading P constituents;
- ``mask``      bool    (N, 2, P): True for real constituents (the first min(n, P) of a jet);
- ``mjj``       float32 (N,).

The generated-background HDF5 (the design's contract 5) holds exactly these four
datasets, chunked and gzip-compressed, with JSON attributes naming the model and
its config. :class:`GeneratedWriter` streams batches into it in constant memory
and renames it into place only when complete.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .errors import InputError
from .io import _json_default, atomic_path

JET_FIELDS = ("pt", "eta", "phi", "m", "n")
PARTICLE_FIELDS = ("pt_rel", "deta", "dphi")
GENERATED_DATASETS = ("jets", "particles", "mask", "mjj")
NO_CONSTITUENTS_FIX = ("this branch needs constituents: use generated data or the LHCO particle file "
                       "(events_anomalydetection_v2.h5), or disable the branch in config")


@dataclass
class PointCloud:
    """A batch of events as dense arrays (see the module docstring); ``label``/``event_id`` when known."""

    jets: np.ndarray
    particles: np.ndarray
    mask: np.ndarray
    mjj: np.ndarray
    label: np.ndarray | None = None
    event_id: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.mjj)

    @property
    def max_particles(self) -> int:
        return self.particles.shape[2]

    def take(self, idx) -> "PointCloud":
        """The events at ``idx`` (indices or a boolean mask)."""
        opt = {k: None if getattr(self, k) is None else getattr(self, k)[idx] for k in ("label", "event_id")}
        return PointCloud(self.jets[idx], self.particles[idx], self.mask[idx], self.mjj[idx], **opt)

    @staticmethod
    def concatenate(clouds) -> "PointCloud":
        clouds = list(clouds)

        def cat(name):
            parts = [getattr(c, name) for c in clouds]
            return None if any(p is None for p in parts) else np.concatenate(parts)

        return PointCloud(*(cat(k) for k in ("jets", "particles", "mask", "mjj", "label", "event_id")))


def leading_constituents(column, k: int) -> tuple[np.ndarray, ...]:
    """(pt_rel, deta, dphi, valid), each (N, k): the first ``k`` constituents of every jet, zero-padded."""
    counts = pc.list_value_length(column).fill_null(0).to_numpy().astype(np.int64)
    flat = pc.list_flatten(column)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    valid = np.arange(k)[None, :] < np.minimum(counts, k)[:, None]
    idx = np.where(valid, starts[:, None] + np.arange(k)[None, :], 0)
    out = []
    for name in PARTICLE_FIELDS:
        values = pc.struct_field(flat, name).to_numpy().astype(np.float64) if len(flat) else np.zeros(1)
        out.append(np.where(valid, values[idx], 0.0))
    return (*out, valid)


def from_table(table: pa.Table, max_particles: int, source="table") -> PointCloud:
    """Dense point clouds of a jets table (contract 2) with at most ``max_particles`` per jet.

    Raises ``InputError`` naming ``source`` for a table without constituents or a
    missing jet column.
    """
    k = int(max_particles)
    if k < 1:
        raise ValueError(f"max_particles must be >= 1, got {max_particles}")
    names = table.schema.names
    for j in ("j1", "j2"):
        for f in JET_FIELDS:
            if f"{j}_{f}" not in names:
                raise InputError(source, f"column '{j}_{f}' is missing", "rerun the clustering stage",
                                 field=f"{j}_{f}")
        if f"{j}_constituents" not in names:
            raise InputError(source, f"the jets table has no constituents (column '{j}_constituents' is missing:"
                             " imported from a features-only file?)", NO_CONSTITUENTS_FIX,
                             field=f"{j}_constituents")
    if "mjj" not in names:
        raise InputError(source, "column 'mjj' is missing", "rerun the clustering stage", field="mjj")
    n = table.num_rows
    jets = np.zeros((n, 2, len(JET_FIELDS)), np.float32)
    particles = np.zeros((n, 2, k, len(PARTICLE_FIELDS)), np.float32)
    mask = np.zeros((n, 2, k), bool)
    for i, j in enumerate(("j1", "j2")):
        for f, name in enumerate(JET_FIELDS):
            jets[:, i, f] = table.column(f"{j}_{name}").to_numpy()
        *vals, valid = leading_constituents(table.column(f"{j}_constituents"), k)
        particles[:, i] = np.stack(vals, axis=-1)
        mask[:, i] = valid
    cloud = PointCloud(jets, particles, mask, table.column("mjj").to_numpy().astype(np.float32),
                       label=table.column("label").to_numpy() if "label" in names else None,
                       event_id=table.column("event_id").to_numpy() if "event_id" in names else None)
    check_finite(cloud, source)
    return cloud


def check_finite(cloud: PointCloud, source) -> None:
    for name in ("jets", "particles", "mjj"):
        a = getattr(cloud, name)
        if not np.isfinite(a).all():
            n_bad = int((~np.isfinite(a)).reshape(len(a), -1).any(axis=1).sum())
            raise InputError(source, f"{n_bad} event(s) have NaN or infinite {name}",
                             "repair or remove those events at the source", field=name)


def n_valid(jets: np.ndarray, max_particles: int) -> np.ndarray:
    """Particles to draw per jet (int, (N, 2)): the jet's n rounded, between 1 and ``max_particles``."""
    return np.clip(np.rint(jets[..., JET_FIELDS.index("n")]), 1, max_particles).astype(np.int64)


def mask_from_counts(counts: np.ndarray, max_particles: int) -> np.ndarray:
    return np.arange(max_particles) < np.asarray(counts)[..., None]


# --------------------------------------------------------------------------------------------- generated HDF5

class GeneratedWriter:
    """Stream batches of generated events into the contract's HDF5, renamed into place on success.

    >>> with GeneratedWriter(path, max_particles=30, attrs={"model": "flow_matching"}) as w:
    ...     for batch in batches:
    ...         w.write(batch)

    Memory is one batch plus the HDF5 chunk cache, whatever the total size.
    """

    def __init__(self, path, max_particles: int, attrs: dict | None = None, chunk_rows: int = 1024):
        self.path = Path(path)
        self.max_particles = int(max_particles)
        self.attrs = dict(attrs or {})
        self.chunk_rows = int(chunk_rows)
        self.n = 0

    def __enter__(self):
        import h5py

        self._atomic = atomic_path(self.path, suffix=".tmp.h5")
        tmp = self._atomic.__enter__()
        self._file = h5py.File(tmp, "w")
        p, c = self.max_particles, self.chunk_rows
        shapes = {"jets": ((2, len(JET_FIELDS)), np.float32), "particles": ((2, p, len(PARTICLE_FIELDS)), np.float32),
                  "mask": ((2, p), bool), "mjj": ((), np.float32)}
        self._ds = {name: self._file.create_dataset(name, shape=(0, *shape), maxshape=(None, *shape), dtype=dtype,
                                                    chunks=(c, *shape), compression="gzip", compression_opts=4,
                                                    shuffle=True)
                    for name, (shape, dtype) in shapes.items()}
        return self

    def write(self, cloud: PointCloud) -> None:
        if cloud.max_particles != self.max_particles:
            raise ValueError(f"batch has {cloud.max_particles} particle slots, the file {self.max_particles}")
        m = len(cloud)
        for name, ds in self._ds.items():
            ds.resize(self.n + m, axis=0)
            ds[self.n:self.n + m] = getattr(cloud, name)
        self.n += m

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None:
                for k, v in {**self.attrs, "n_events": self.n}.items():
                    self._file.attrs[k] = json.dumps(v, sort_keys=True, default=_json_default)
        finally:
            self._file.close()
        return self._atomic.__exit__(exc_type, exc, tb)


def generated_attrs(path) -> dict:
    import h5py

    with _open_generated(path) as f:
        return {k: json.loads(v) for k, v in f.attrs.items()}


def _open_generated(path):
    import h5py

    path = Path(path)
    if not path.exists():
        raise InputError(path, "file does not exist", "run the sampling stage that produces it")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise InputError(path, f"not a readable HDF5 file ({e})", "delete it and rerun the sampling stage") from e
    missing = [n for n in GENERATED_DATASETS if n not in f]
    if missing:
        f.close()
        raise InputError(path, f"dataset(s) {missing} missing (has: {list(f)})",
                         "regenerate it with this version of the workflow", field=missing[0])
    return f


def read_generated(path, start: int = 0, stop: int | None = None) -> PointCloud:
    """Events ``start:stop`` of a generated-background HDF5 (all by default)."""
    with _open_generated(path) as f:
        cloud = PointCloud(*(f[n][start:stop] for n in GENERATED_DATASETS))
    check_finite(cloud, path)
    return cloud


def iter_generated(path, batch_size: int):
    """Yield the events of a generated-background HDF5 in batches (constant memory)."""
    with _open_generated(path) as f:
        n = len(f["mjj"])
        for i in range(0, n, batch_size):
            yield PointCloud(*(f[k][i:i + batch_size] for k in GENERATED_DATASETS))


# --------------------------------------------------------------------------------------------- pre-processing

class JetTransform:
    """Invertible jet pre-processing: (log pt/m_jj, eta, phi, log m/m_jj, n) standardised.

    Statistics are shared by the two jets (one per feature), so the transform
    commutes with swapping them. ``mjj_condition`` maps log m_jj linearly to
    [-1, 1] over the range seen in ``fit``.
    """

    M_FLOOR = 1.0  # GeV: jet masses are >= 0; log of m + 1 GeV stays finite

    def __init__(self):
        self.mean = self.std = None
        self.log_mjj_range = None

    def _raw(self, jets, mjj):
        jets = np.asarray(jets, np.float64)
        mjj = np.asarray(mjj, np.float64)[:, None]
        pt, eta, phi, m, n = (jets[..., i] for i in range(5))
        return np.stack([np.log(pt / mjj), eta, phi, np.log((m + self.M_FLOOR) / mjj), n], axis=-1)

    def fit(self, jets: np.ndarray, mjj: np.ndarray) -> "JetTransform":
        raw = self._raw(jets, mjj).reshape(-1, 5)
        self.mean = raw.mean(0)
        self.std = np.where(raw.std(0) > 0, raw.std(0), 1.0)
        lm = np.log(np.asarray(mjj, np.float64))
        self.log_mjj_range = [float(lm.min()), float(lm.max())]
        return self

    def transform(self, jets: np.ndarray, mjj: np.ndarray) -> np.ndarray:
        return ((self._raw(jets, mjj) - self.mean) / self.std).astype(np.float32)

    def inverse(self, x: np.ndarray, mjj: np.ndarray) -> np.ndarray:
        """Jets (N, 2, 5) from transformed values; n rounded to an integer >= 1, m >= 0."""
        raw = np.asarray(x, np.float64) * self.std + self.mean
        mjj = np.asarray(mjj, np.float64)[:, None]
        out = np.stack([np.exp(raw[..., 0]) * mjj, raw[..., 1], np.mod(raw[..., 2] + np.pi, 2 * np.pi) - np.pi,
                        np.maximum(np.exp(raw[..., 3]) * mjj - self.M_FLOOR, 0.0),
                        np.maximum(np.rint(raw[..., 4]), 1.0)], axis=-1)
        return out.astype(np.float32)

    def mjj_condition(self, mjj: np.ndarray) -> np.ndarray:
        lo, hi = self.log_mjj_range
        return (2 * (np.log(np.asarray(mjj, np.float64)) - lo) / max(hi - lo, 1e-12) - 1).astype(np.float32)

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist(), "log_mjj_range": self.log_mjj_range}

    @classmethod
    def from_dict(cls, d: dict) -> "JetTransform":
        t = cls()
        t.mean, t.std, t.log_mjj_range = np.asarray(d["mean"]), np.asarray(d["std"]), list(d["log_mjj_range"])
        return t


class ParticleTransform:
    """Invertible constituent pre-processing: (f(pT_rel), deta, dphi) standardised over real particles.

    ``pt_rel`` chooses f: ``"log1m"`` = log(1 - pT_rel) (the published diffusion
    pre-processing; it resolves the hard end and squeezes the soft particles together
    near 0) or ``"log"`` = log pT_rel (spreads the soft end, where most constituents are).
    """

    PT_REL_MAX = 1 - 1e-6
    PT_REL_MIN = 1e-8
    KINDS = ("log1m", "log")

    def __init__(self, pt_rel: str = "log1m"):
        if pt_rel not in self.KINDS:
            raise ValueError(f"unknown pT_rel pre-processing {pt_rel!r} (allowed: {', '.join(self.KINDS)})")
        self.pt_rel = pt_rel
        self.mean = self.std = None

    def _raw(self, particles):
        p = np.asarray(particles, np.float64)
        pt = np.clip(p[..., 0], self.PT_REL_MIN, self.PT_REL_MAX)
        f = np.log(pt) if self.pt_rel == "log" else np.log1p(-pt)
        return np.stack([f, p[..., 1], p[..., 2]], axis=-1)

    def fit(self, particles: np.ndarray, mask: np.ndarray) -> "ParticleTransform":
        raw = self._raw(particles)[np.asarray(mask, bool)]
        if len(raw) == 0:
            raise ValueError("no particles to fit the pre-processing on")
        self.mean = raw.mean(0)
        self.std = np.where(raw.std(0) > 0, raw.std(0), 1.0)
        return self

    def transform(self, particles: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Transformed particles; padded slots are 0."""
        out = (self._raw(particles) - self.mean) / self.std
        return np.where(np.asarray(mask, bool)[..., None], out, 0.0).astype(np.float32)

    def inverse(self, x: np.ndarray, mask: np.ndarray) -> np.ndarray:
        raw = np.asarray(x, np.float64) * self.std + self.mean
        if self.pt_rel == "log":
            pt = np.exp(np.minimum(raw[..., 0], 0.0))
        else:
            pt = -np.expm1(np.minimum(raw[..., 0], 0.0))
        out = np.stack([pt, raw[..., 1], np.mod(raw[..., 2] + np.pi, 2 * np.pi) - np.pi], axis=-1)
        return np.where(np.asarray(mask, bool)[..., None], out, 0.0).astype(np.float32)

    def to_dict(self) -> dict:
        return {"pt_rel": self.pt_rel, "mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "ParticleTransform":
        t = cls(d.get("pt_rel", "log1m"))  # files written before the choice existed used log(1 - pT_rel)
        t.mean, t.std = np.asarray(d["mean"]), np.asarray(d["std"])
        return t


# --------------------------------------------------------------------------------------------- figures

JET_LABELS = {"pt": r"$p_T$ [GeV]", "eta": r"$\eta$", "phi": r"$\phi$", "m": r"$m$ [GeV]", "n": "constituents"}
PARTICLE_LABELS = {"pt_rel": r"$\log_{10} p_T^{rel}$", "deta": r"$\Delta\eta$", "dphi": r"$\Delta\phi$"}


def _bins(reference: np.ndarray, n_bins: int = 40, integer: bool = False) -> np.ndarray:
    lo, hi = np.quantile(reference, [0.005, 0.995]) if len(reference) else (0.0, 1.0)
    if integer:
        lo, hi = np.floor(lo) - 0.5, np.ceil(hi) + 0.5
        step = max(1.0, np.ceil((hi - lo) / n_bins))
        return np.arange(lo, hi + step, step)
    return np.linspace(lo, hi if hi > lo else lo + 1.0, n_bins + 1)


def jet_panels(samples: dict, reference: str, region: str) -> list:
    """Panels (xlabel, {name: values}, bins) of every jet feature of both jets, for :func:`plots.feature_grid`."""
    out = []
    for j, jet in enumerate(("leading", "sub-leading")):
        for f, name in enumerate(JET_FIELDS):
            values = {k: c.jets[:, j, f] for k, c in samples.items()}
            out.append((f"{region} {jet} jet {JET_LABELS[name]}", values,
                        _bins(values[reference], integer=name == "n")))
    return out


def particle_panels(samples: dict, reference: str, region: str) -> list:
    """Panels of the constituents of both jets (real particles only) and of the multiplicity within the cap."""
    out = []
    for f, name in enumerate(PARTICLE_FIELDS):
        values = {}
        for k, c in samples.items():
            v = c.particles[..., f][c.mask]
            values[k] = np.log10(np.maximum(v, 1e-6)) if name == "pt_rel" else v
        out.append((f"{region} {PARTICLE_LABELS[name]}", values, _bins(values[reference])))
    counts = {k: c.mask.sum(-1).ravel() for k, c in samples.items()}
    out.append((f"{region} particles per jet (cap {samples[reference].max_particles})", counts,
                _bins(counts[reference], integer=True)))
    return out


# --------------------------------------------------------------------------------------------- generators
# Helpers of the generators of whole events (flow matching, diffusion); torch- and TensorFlow-free.


def sampling_chunks(sorted_counts: np.ndarray, budget: int):
    """(start, stop) of consecutive chunks of clouds (ascending ``sorted_counts``) with at most ``budget``
    particle slots each (chunk size x its largest count); a single cloud may exceed it."""
    start, n = 0, len(sorted_counts)
    while start < n:
        slots = np.arange(1, n - start + 1) * sorted_counts[start:]
        stop = start + max(1, int(np.searchsorted(slots, budget, side="right")))
        yield start, stop
        start = stop


def check_mjj(mjj) -> np.ndarray:
    mjj = np.asarray(mjj, np.float64).reshape(-1)
    if not (np.isfinite(mjj).all() and (mjj > 0).all()):
        raise ValueError("m_jj values must be finite and positive")
    return mjj


def check_training_cloud(cloud: PointCloud, name: str) -> None:
    if not isinstance(cloud, PointCloud):
        raise TypeError(f"{name} must be a PointCloud, got {type(cloud).__name__}")
    n, p = len(cloud), cloud.max_particles
    shapes = {"jets": (n, 2, len(JET_FIELDS)), "particles": (n, 2, p, len(PARTICLE_FIELDS)), "mask": (n, 2, p)}
    for key, shape in shapes.items():
        if getattr(cloud, key).shape != shape:
            raise ValueError(f"{name}.{key} has shape {getattr(cloud, key).shape}, expected {shape}")
    if n < 1:
        raise ValueError(f"{name} has no events")
    check_finite(cloud, name)
    if not (cloud.mjj > 0).all():
        raise InputError(name, "m_jj must be positive", "check the event selection", field="mjj")


def data_fingerprint(train: PointCloud, val: PointCloud) -> dict:
    return {"data": [float(np.sum(c.mjj, dtype=np.float64)) for c in (train, val)]}


def jsonable(obj):
    """``obj`` with numpy scalars as Python numbers (checkpoint fingerprints compare equal after a reload)."""
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    return obj.item() if isinstance(obj, np.generic) else obj


def particle_condition(jets: np.ndarray, mjj: np.ndarray, jet_transform: JetTransform) -> np.ndarray:
    """(N, 2, 6) float32: each jet's transformed (pt, eta, phi, m, n) and the event's m_jj condition.

    The jet's multiplicity n is in the condition because the particles kept are the leading
    min(n, max_particles) of the jet: below the cap, how soft the last kept particle is depends on
    how many were cut away (without n the generated soft end is far too broad).
    """
    kin = jet_transform.transform(jets, mjj)
    mc = np.broadcast_to(jet_transform.mjj_condition(mjj)[:, None, None], (*kin.shape[:2], 1))
    return np.concatenate([kin, mc], axis=-1).astype(np.float32)


def leading_jet_first(jets: np.ndarray) -> np.ndarray:
    """Generated jets (N, 2, 5) with the higher-pT jet of each event first, as in the data."""
    swap = jets[:, 1, 0] > jets[:, 0, 0]
    jets[swap] = jets[swap][:, ::-1]
    return jets


def check_particle_sampling(jets, mjj, max_particles) -> tuple[np.ndarray, np.ndarray, int]:
    """(jets float32, mjj, particle slots) for a particle model's ``sample``; ValueError on bad shapes."""
    mjj = check_mjj(mjj)
    jets = np.asarray(jets, np.float32)
    if jets.shape != (len(mjj), 2, len(JET_FIELDS)):
        raise ValueError(f"jets must have shape ({len(mjj)}, 2, {len(JET_FIELDS)}), got {jets.shape}")
    p = int(max_particles)
    if p < 1:
        raise ValueError(f"max_particles must be >= 1, got {max_particles}")
    return jets, mjj, p


def sampled_particles(x: np.ndarray, counts: np.ndarray, transform: ParticleTransform):
    """(particles (N, 2, P, 3), mask (N, 2, P)) from a particle model's transformed clouds ``x`` (2N, P, 3)
    with ``counts`` real particles each: inverted, the leading constituents first, as in the data."""
    p = x.shape[1]
    mask = mask_from_counts(counts, p)
    particles = transform.inverse(x, mask)
    key = np.where(mask, -particles[..., PARTICLE_FIELDS.index("pt_rel")], np.inf)
    particles = np.take_along_axis(particles, np.argsort(key, axis=1, kind="stable")[..., None], axis=1)
    n = len(counts) // 2
    return particles.reshape(n, 2, p, len(PARTICLE_FIELDS)), mask.reshape(n, 2, p)
