"""Embedded event generation: Pythia 8 (pp, 13 TeV) + parametric detector -> raw-event table.

One chunk is one Pythia instance with its own seed. The event loop runs in
C++ (``Pythia.nextBatch``) and the particles of each batch are extracted and
smeared with vectorised numpy, so the whole path costs little more than
Pythia itself.

Reproducibility: the Pythia seed and the detector's random stream both come
from ``seed``; the same (model, params, n_events, seed, process, label, chunk,
detector) gives a byte-identical table, whatever the batch size.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from importlib import metadata

import awkward as ak
import numpy as np
import pyarrow as pa

from .. import io
from ..errors import ConfigError
from . import detector as det
from . import processes
from .schema import EVENT_ID_BITS_PER_CHUNK, event_id_base, raw_table, validate_raw

DEFAULT_BATCH_SIZE = 250
# Tag of the detector's random stream (kept apart from Pythia's own engine).
_DETECTOR_STREAM = 0x5EED_DE7E
# A chunk aborts when more than this many events in a row fail, or more than
# this fraction of all attempts.
_MAX_FAIL_FRACTION = 0.1
_MIN_FAIL_ALLOWANCE = 100


class GenerationError(RuntimeError):
    """Pythia could not be set up or kept failing to generate events."""


def chunk_seed(global_seed: int, process: str, chunk: int) -> int:
    """Pythia seed of one chunk: a stable hash of (global seed, process, chunk) in [1, 900000000].

    Never 0: ``Random:seed = 0`` would seed Pythia from the clock.
    """
    if isinstance(global_seed, bool) or not isinstance(global_seed, (int, np.integer)):
        raise ConfigError("seed", f"global seed must be an integer, got {global_seed!r}")
    if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk < 0:
        raise ConfigError("chunk", f"chunk index must be an integer >= 0, got {chunk!r}")
    if not isinstance(process, str) or not process:
        raise ConfigError("process", f"process name must be a non-empty string, got {process!r}")
    digest = hashlib.sha256(f"resonant/{int(global_seed)}/{process}/{int(chunk)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % processes.SEED_MAX + processes.SEED_MIN


def pythia_version() -> str:
    try:
        return metadata.version("pythia8mc")
    except metadata.PackageNotFoundError:  # pragma: no cover - a non-pip build
        return "unknown"


def make_pythia(settings: list[str], model: str = "?"):
    """A quiet, initialised ``pythia8mc.Pythia`` with ``settings``; raise ``GenerationError`` on failure."""
    import pythia8mc

    pythia = pythia8mc.Pythia("", False)  # no banner
    for s in settings:
        if not pythia.readString(s):
            raise GenerationError(f"model '{model}': Pythia rejected the setting {s!r}")
    if not pythia.init():
        raise GenerationError(f"model '{model}': Pythia initialisation failed with settings {settings}")
    return pythia


class _ParticleInfo:
    """Charge and visibility per particle id, looked up in Pythia's particle table once per id."""

    def __init__(self, pythia):
        self._pd = pythia.particleData
        self._ids = np.zeros(0, dtype=np.int64)
        self._charge = np.zeros(0)
        self._visible = np.zeros(0, dtype=bool)

    def lookup(self, pid: np.ndarray):
        uniq = np.unique(pid)
        new = np.setdiff1d(uniq, self._ids, assume_unique=True)
        if len(new):
            charge = np.array([self._pd.chargeType(int(i)) / 3.0 for i in new])
            vis = np.array([bool(self._pd.isVisible(int(i))) for i in new])
            vis &= det.default_visible(new, charge)
            ids = np.concatenate([self._ids, new])
            order = np.argsort(ids)
            self._ids = ids[order]
            self._charge = np.concatenate([self._charge, charge])[order]
            self._visible = np.concatenate([self._visible, vis])[order]
        idx = np.searchsorted(self._ids, pid)
        return self._charge[idx], self._visible[idx]


def _final_state(batch):
    """Flat arrays (px, py, pz, e, pid) of the final-state particles of a batch, and counts per event."""
    prt = batch.prt
    counts_all = ak.to_numpy(ak.num(prt, axis=1))
    status = ak.to_numpy(ak.flatten(prt.status, axis=None))
    final = status > 0
    event = np.repeat(np.arange(len(counts_all)), counts_all)
    counts = np.bincount(event[final], minlength=len(counts_all))
    p = prt.p
    px, py, pz, e = (ak.to_numpy(ak.flatten(p[f], axis=None))[final] for f in ("px", "py", "pz", "e"))
    pid = ak.to_numpy(ak.flatten(prt.id, axis=None))[final].astype(np.int64)
    return px, py, pz, e, pid, counts


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def generate_chunk(model: str, params: dict, n_events: int, seed: int, process: str, label: int, chunk: int,
                   detector: dict | None = None, progress: bool = True,
                   batch_size: int = DEFAULT_BATCH_SIZE) -> pa.Table:
    """Generate ``n_events`` events of ``model`` and return them as a raw-event table.

    ``seed`` is the Pythia seed of this chunk (see :func:`chunk_seed`);
    ``detector`` overrides :data:`~resonant.data.detector.DEFAULT_DETECTOR`
    (``{"enabled": False}`` for truth-level visible particles). Events Pythia
    fails to generate are skipped and replaced, so the table has exactly
    ``n_events`` rows (no jet selection here); the number skipped is logged and
    stored in the table's metadata. ``event_id = event_id_base(process, chunk) + i``;
    ``pthat`` is the hard process's pTHat (0 for 2 -> 1 processes).
    """
    resolved = processes.resolve_params(model, params)
    settings = processes.pythia_settings(model, resolved, seed=seed)
    det_cfg = det.detector_config(detector)
    if isinstance(n_events, bool) or not isinstance(n_events, (int, np.integer)) or n_events < 0:
        raise ConfigError("n_events", f"must be an integer >= 0, got {n_events!r}")
    if n_events >= 2**EVENT_ID_BITS_PER_CHUNK:
        raise ConfigError("n_events", f"{n_events} events do not fit in one chunk "
                          f"(at most {2**EVENT_ID_BITS_PER_CHUNK - 1})", "use more chunks")
    if isinstance(label, bool) or label not in (0, 1):
        raise ConfigError("label", f"must be 0 (background) or 1 (signal), got {label!r}")
    if not isinstance(process, str) or not process:
        raise ConfigError("process", f"process name must be a non-empty string, got {process!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ConfigError("batch_size", f"must be an integer >= 1, got {batch_size!r}")
    try:
        id0 = event_id_base(process, chunk)
    except (ValueError, TypeError) as e:
        raise ConfigError("chunk", str(e)) from e

    tag = f"[generate {process} chunk {chunk}]"
    t0 = time.perf_counter()
    pythia = make_pythia(settings, model)
    if progress:
        _log(f"{tag} model {model} {json.dumps(resolved, sort_keys=True)}, seed {seed}, "
             f"Pythia initialised in {time.perf_counter() - t0:.1f} s; generating {n_events} events")
    rng = np.random.default_rng([seed, _DETECTOR_STREAM])
    info = _ParticleInfo(pythia)

    pts, etas, phis, counts, pthats = [], [], [], [], []
    done = failed = 0
    max_failed = max(_MIN_FAIL_ALLOWANCE, int(_MAX_FAIL_FRACTION * n_events))
    t_loop = time.perf_counter()
    while done < n_events:
        want = min(batch_size, n_events - done)
        tb = time.perf_counter()
        batch = pythia.nextBatch(want, "skip")
        got = len(batch)
        failed += want - got
        if failed > max_failed:
            raise GenerationError(f"{tag} model '{model}': {failed} events failed in Pythia "
                                  f"(after {done + got} good ones); check the model settings")
        if got:
            px, py, pz, e, pid, cnt = _final_state(batch)
            charge, visible = info.lookup(pid)
            pt, eta, phi, cnt = det.smear_flat(px, py, pz, e, pid, cnt, rng, det_cfg, charge=charge,
                                               visible=visible)
            pts.append(pt.astype(np.float32))
            etas.append(eta.astype(np.float32))
            phis.append(phi.astype(np.float32))
            counts.append(cnt)
            pthats.append(np.sqrt(np.maximum(ak.to_numpy(batch.info.pT2Hat), 0.0)).astype(np.float32))
            done += got
        del batch  # free the full event record before the next batch is built
        if progress:
            now = time.perf_counter()
            _log(f"{tag} {done}/{n_events} events, {failed} failed, "
                 f"{got / max(now - tb, 1e-9):.1f} ev/s now, {done / max(now - t_loop, 1e-9):.1f} ev/s mean, "
                 f"{(counts[-1].mean() if got else 0):.0f} particles/event")

    if failed and progress:
        _log(f"{tag} {failed} event(s) failed in Pythia and were skipped (replaced by new ones)")
    cat = (lambda xs, dt: np.concatenate(xs) if xs else np.zeros(0, dtype=dt))  # noqa: E731
    cnt = cat(counts, np.int64)
    flat = ak.zip({"pt": cat(pts, np.float32), "eta": cat(etas, np.float32), "phi": cat(phis, np.float32)})
    particles = ak.unflatten(flat, cnt)
    table = raw_table(id0 + np.arange(n_events, dtype=np.int64), process, label, particles,
                      pthat=cat(pthats, np.float32))
    meta = {
        "generator": {
            "program": "pythia8mc", "version": pythia_version(), "model": model, "params": resolved,
            "n_events": int(n_events), "n_failed": int(failed), "seed": int(seed), "process": process,
            "label": int(label), "chunk": int(chunk), "settings": settings,
        },
        "detector": det_cfg,
    }
    schema_meta = dict(table.schema.metadata or {})
    schema_meta[b"resonant"] = json.dumps(meta, sort_keys=True).encode()
    table = table.replace_schema_metadata(schema_meta)
    if progress:
        dt = time.perf_counter() - t0
        _log(f"{tag} done: {n_events} events in {dt:.1f} s ({n_events / max(dt, 1e-9):.1f} ev/s incl. init), "
             f"{len(flat) / max(n_events, 1):.0f} particles/event")
    return table


def write_chunk(table: pa.Table, path) -> None:
    """Validate ``table`` against the raw-event contract and write it atomically to ``path`` (Parquet)."""
    validate_raw(table, path)
    io.write_table(table, path)


def generation_metadata(table: pa.Table) -> dict:
    """The generator/detector metadata stored in a table by :func:`generate_chunk` (empty if none)."""
    raw = (table.schema.metadata or {}).get(b"resonant")
    return json.loads(raw) if raw else {}
