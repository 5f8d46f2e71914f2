"""Import the official LHC Olympics 2020 R&D files into the project's contracts.

Two sources, two contracts (see ``schema.py``):

* ``events_anomalydetection_v2.h5`` (particles) -> raw events (contract 1).
  A pandas DataFrame stored with ``to_hdf(key="df")`` in *fixed* format: one
  float block ``df/block0_values`` of shape (N, 2101) = 700 massless particles
  x (pT, eta, phi), zero padded, then the truth label (0 QCD, 1 signal).
  :func:`import_particles` streams it in row chunks (never the whole file) into
  a raw-event Parquet file, one row group per chunk.
* ``events_anomalydetection_v2.features.h5`` and
  ``events_anomalydetection_qcd_extra_inneronly_features.h5`` (high-level jet
  features) -> the jets table without constituents (contract 2), with the
  same event selection as the clustering stage (:func:`import_features`).

The particle file is read in dense blocks of at most ``DENSE_BLOCK_ROWS`` rows
(two buffers, reused), so memory does not depend on the file size nor on the
row-group size ``chunk_size``.

Both imports give event ``i`` (its row index in the file) the id
``event_id_base(id_tag, 0) + i``, so the particle and the features import of
the same events share ids.

Reading the particle file. The published file is compressed; which HDF5
filter it uses depends on the ``complib`` it was written with, so the reader
is chosen from the dataset's filter pipeline (:func:`inspect_particle_file`
reports it as ``reader``):

* ``inflate-threads``: deflate (zlib) with or without shuffle, chunks
  spanning whole rows -- what ``to_hdf(complib="zlib")`` writes. h5py reads
  the raw chunks and a small thread pool inflates them (``zlib`` releases the
  GIL), because single-threaded inflating is slower than the rest of the
  import together. With the optional ``isal`` package installed, ISA-L
  inflates instead of zlib (same bytes, ~1.5-2x faster). Checked against
  h5py's own decoding on the first and last rows before use; on any mismatch
  the plain h5py reader is used.
* ``h5py``: uncompressed (pandas' default ``to_hdf``) or any other filter
  h5py decodes: ``dset[start:stop]``.
* ``pytables``: filters only PyTables decodes (blosc, blosc2, lzo, bzip2), and
  the pandas *table* format (``df/table``, field ``values_block_0``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import warnings
import zlib
from collections import deque
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import numpy as np
import pyarrow as pa

from ..errors import InputError, PhysicsWarning
from ..io import parquet_writer
from .schema import JETS, JETS_FEATURES_ONLY_SCHEMA, PARTICLE_TYPE, RAW_SCHEMA, event_id_base

log = logging.getLogger(__name__)

PARTICLE_FILE = "events_anomalydetection_v2.h5"
FEATURES_FILE = "events_anomalydetection_v2.features.h5"
EXTRA_QCD_FILE = "events_anomalydetection_qcd_extra_inneronly_features.h5"
N_PARTICLES = 700
N_COLUMNS = 3 * N_PARTICLES + 1  # (pT, eta, phi) x 700, then the label
PARTICLE_KEY = "df"
DEFAULT_PROCESS_NAMES = {0: "qcd", 1: "signal"}
DEFAULT_CHUNK_SIZE = 10_000  # events per row group of the raw output
DENSE_BLOCK_ROWS = 10_000  # rows read at once: ~170 MB of float64, whatever chunk_size is
LABEL_SAMPLE_ROWS = 1_000  # rows read at each end of the file by inspect_particle_file

JET_VARIABLES = ("px", "py", "pz", "m", "tau1", "tau2", "tau3")
FEATURE_COLUMNS = tuple(f"{v}j{j}" for j in (1, 2) for v in JET_VARIABLES)
LABEL_COLUMN = "label"
FEATURES_CHUNK_ROWS = 250_000

_FILTER_DEFLATE = 1
_FILTER_SHUFFLE = 2

try:  # ISA-L inflates ~1.5x faster than zlib, same output; optional
    from isal import isal_zlib as _inflate_lib

    _INFLATE_ERRORS: tuple = (_inflate_lib.error, zlib.error)
except ImportError:  # pragma: no cover - depends on the environment
    _inflate_lib = zlib
    _INFLATE_ERRORS = (zlib.error,)
INFLATE_LIBRARY = _inflate_lib.__name__


def _inflate(raw: bytes, size: int) -> bytes:
    return _inflate_lib.decompress(raw, bufsize=size)
_FIX_DOWNLOAD = (
    "download the file again from the LHC Olympics 2020 R&D record (Zenodo) and check its size and checksum"
)


# --------------------------------------------------------------------------- files


def _check_hdf5_file(path, kind: str) -> Path:
    """Exists, non-empty, has the HDF5 signature; raise ``InputError`` otherwise."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file does not exist",
                         f"download {kind} from the LHC Olympics 2020 R&D record (Zenodo) and check the path")
    if not path.is_file():
        raise InputError(path, "is not a regular file", f"pass the path of {kind} itself")
    size = path.stat().st_size
    if size == 0:
        raise InputError(path, "file is empty (0 bytes)", _FIX_DOWNLOAD)
    try:
        is_h5 = h5py.is_hdf5(str(path))
    except OSError as e:
        raise InputError(path, f"cannot be read ({e})", "check the file's permissions") from e
    if not is_h5:
        raise InputError(path, f"not an HDF5 file (no HDF5 signature in its {size} bytes)",
                         f"pass {kind} as published (pandas to_hdf output), not a renamed or converted file")
    return path


def _open_h5py(path: Path) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise InputError(path, f"the HDF5 file cannot be opened ({e}); it is truncated or corrupt "
                         "(an interrupted download?)", _FIX_DOWNLOAD) from e


def _describe_keys(f: h5py.File) -> str:
    keys = list(f.keys())
    return ", ".join(repr(k) for k in keys) if keys else "none"


# --------------------------------------------------------------------------- particle file


KEY_SETTING = "dataset.lhco.key"  # where the workflow's config sets the particle file's key


def _set_key(key: str) -> str:
    """How to choose ``key``: the config setting, and its equivalents outside the workflow."""
    return (f"set {KEY_SETTING}: {key} in the config (outside the workflow: import_lhco.py particles "
            f"--key {key}, or import_particles(key={key!r}))")


def _particle_dataset_node(f: h5py.File, path: Path, key: str):
    """The dataset holding the dense block, and the pandas layout ('fixed' or 'table')."""
    if key not in f:
        hints = []
        for k in f.keys():
            obj = f[k]
            if not isinstance(obj, h5py.Group):
                continue
            if "block0_values" in obj:
                ncol = obj["block0_values"].shape[-1]
            elif "table" in obj and "values_block_0" in (obj["table"].dtype.names or ()):
                ncol = _dense_shape(obj["table"], "table")[1]
            else:
                continue
            if ncol == N_COLUMNS:
                hints.append(f"the particles are under key '{k}' ({N_COLUMNS} columns): {_set_key(k)}")
            elif ncol <= 20:
                hints.append(f"key '{k}' has {ncol} columns: this looks like a high-level features file; "
                             "give it as dataset.lhco.features, not dataset.lhco.particles "
                             "(import_features, not import_particles)")
        fix = "; ".join(hints) or (f"pass the particle file {PARTICLE_FILE}; if your DataFrame is stored "
                                   f"under another key, {_set_key('<key>')}")
        raise InputError(path, f"no key '{key}' (the pandas key, set by {KEY_SETTING}, default '{PARTICLE_KEY}'; "
                         f"keys in the file: {_describe_keys(f)}): this is not {PARTICLE_FILE} as published "
                         f"(pandas DataFrame under key '{PARTICLE_KEY}')", fix, field=key)
    group = f[key]
    if not isinstance(group, h5py.Group):
        raise InputError(path, f"'{key}' is a plain HDF5 dataset, not a pandas DataFrame",
                         f"write the DataFrame with df.to_hdf(path, key='{key}')", field=key)
    if "block0_values" in group:
        nblocks = int(group.attrs.get("nblocks", 1))
        if nblocks != 1:
            raise InputError(path, f"pandas stored '{key}' in {nblocks} blocks (columns of mixed dtypes); "
                             f"expected one float block of {N_COLUMNS} columns",
                             "convert every column to float before to_hdf, as in the published file",
                             field=f"{key}/block0_values")
        return group["block0_values"], "fixed"
    if "table" in group:
        tbl = group["table"]
        names = tbl.dtype.names or ()
        blocks = [n for n in names if n.startswith("values_block_")]
        if blocks != ["values_block_0"]:
            raise InputError(path, f"pandas table '{key}' has value blocks {blocks}; expected a single float "
                             f"block of {N_COLUMNS} columns", "convert every column to float before to_hdf",
                             field=f"{key}/table")
        return tbl, "table"
    raise InputError(path, f"group '{key}' holds neither pandas' fixed format ({key}/block0_values) nor its "
                     f"table format ({key}/table) (has: {', '.join(group.keys()) or 'nothing'})",
                     f"pass {PARTICLE_FILE} as published", field=key)


def _dense_shape(node, layout: str) -> tuple[int, int, np.dtype]:
    if layout == "fixed":
        if "shape" in node.attrs and "axis0" in node.parent:  # pandas' placeholder for an empty frame
            return 0, len(node.parent["axis0"]), np.dtype(node.attrs.get("value_type", b"float64").decode())
        if node.ndim != 2:
            raise InputError(node.file.filename, f"'{node.name}' has shape {node.shape}, expected "
                             f"(n_events, {N_COLUMNS})", f"pass {PARTICLE_FILE} as published",
                             field=node.name.lstrip("/"))
        return node.shape[0], node.shape[1], node.dtype
    sub = node.dtype["values_block_0"]
    ncol = sub.shape[0] if sub.shape else 1
    return node.shape[0], ncol, sub.base


def _filters(dset: h5py.Dataset) -> list[tuple[int, str]]:
    plist = dset.id.get_create_plist()
    out = []
    for i in range(plist.get_nfilters()):
        fid, _flags, _opts, name = plist.get_filter(i)
        out.append((int(fid), name.decode(errors="replace") if isinstance(name, bytes) else str(name)))
    return out


class _H5pyReader:
    name = "h5py"

    def __init__(self, path: Path, dset: h5py.Dataset):
        self.path, self.dset = path, dset

    def read(self, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
        try:
            if out is None:
                return self.dset[start:stop]
            out = out[: stop - start]
            self.dset.read_direct(out, np.s_[start:stop], np.s_[0:stop - start])
            return out
        except OSError as e:
            raise InputError(self.path, f"cannot read rows {start}-{stop - 1} ({e}); the file is corrupt",
                             _FIX_DOWNLOAD, field=self.dset.name.lstrip("/")) from e

    def close(self) -> None:
        pass


class _InflateReader:
    """Deflate (+ shuffle) chunks spanning whole rows, inflated by a thread pool.

    h5py reads the compressed chunks (fast, under its lock); inflating
    (``zlib``, or ISA-L's ``isal_zlib`` if the ``isal`` package is installed:
    same output, ~1.5x faster) and numpy's un-shuffle copy release the GIL,
    so the threads run in parallel. A chunk lying wholly inside the requested
    rows is un-shuffled straight into the output array. At most
    ``2 * threads`` chunks are in flight: memory stays bounded.
    """

    name = "inflate-threads"

    def __init__(self, path: Path, dset: h5py.Dataset, threads: int):
        self.path, self.dset = path, dset
        self.rows_per_chunk, self.ncol = dset.chunks[0], dset.shape[1]
        self.dtype = dset.dtype
        self.pipeline = [fid for fid, _ in _filters(dset)]
        self.chunk_nbytes = self.rows_per_chunk * self.ncol * self.dtype.itemsize
        self.threads = max(1, threads)
        self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="lhco-inflate")
        self.field = dset.name.lstrip("/")

    def _corrupt(self, r0: int, problem: str) -> InputError:
        return InputError(self.path, f"corrupt compressed chunk at rows {r0}-{r0 + self.rows_per_chunk - 1} "
                          f"({problem})", _FIX_DOWNLOAD, field=self.field)

    def _decode(self, filter_mask: int, raw: bytes, r0: int, dest: np.ndarray | None) -> np.ndarray:
        """Decode one chunk into ``dest`` (a C-contiguous (rows, ncol) view) or a new array."""
        buf = raw
        unshuffle = False
        for i in reversed(range(len(self.pipeline))):
            if filter_mask & (1 << i):
                continue  # filter skipped for this chunk (e.g. incompressible)
            if self.pipeline[i] == _FILTER_DEFLATE:
                if unshuffle:
                    raise self._corrupt(r0, "shuffle before deflate is not a pandas layout")
                try:
                    buf = _inflate(buf, self.chunk_nbytes)
                except _INFLATE_ERRORS as e:
                    raise self._corrupt(r0, str(e)) from e
            else:
                unshuffle = True
        if len(buf) != self.chunk_nbytes:
            raise self._corrupt(r0, f"decodes to {len(buf)} bytes, expected {self.chunk_nbytes}")
        if dest is None:
            dest = np.empty((self.rows_per_chunk, self.ncol), self.dtype)
        if unshuffle:  # byte plane k holds byte k of every element
            size = self.dtype.itemsize
            planes = np.frombuffer(buf, np.uint8).reshape(size, -1)
            out = dest.view(np.uint8).reshape(-1, size)
            for k in range(size):
                out[:, k] = planes[k]
        else:
            dest.reshape(-1)[...] = np.frombuffer(buf, self.dtype)
        return dest

    def read(self, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
        c = self.rows_per_chunk
        out = np.empty((stop - start, self.ncol), self.dtype) if out is None else out[: stop - start]
        pending: deque = deque()

        def drain(limit: int) -> None:
            while len(pending) > limit:
                r0, fut, direct = pending.popleft()
                lo, hi = max(start, r0), min(stop, r0 + c)
                if fut is None:  # chunk not stored as such: let HDF5 decode it
                    out[lo - start:hi - start] = _H5pyReader(self.path, self.dset).read(lo, hi)
                    continue
                chunk = fut.result()
                if not direct:
                    out[lo - start:hi - start] = chunk[lo - r0:hi - r0]

        try:
            for ci in range(start // c, (stop - 1) // c + 1):
                r0 = ci * c
                try:
                    fmask, raw = self.dset.id.read_direct_chunk((r0, 0))
                except (OSError, KeyError, ValueError):
                    pending.append((r0, None, False))
                else:
                    direct = r0 >= start and r0 + c <= stop
                    dest = out[r0 - start:r0 - start + c] if direct else None
                    pending.append((r0, self.pool.submit(self._decode, fmask, raw, r0, dest), direct))
                drain(2 * self.threads)
            drain(0)
        finally:
            for _, fut, _ in pending:
                if fut is not None:
                    fut.cancel()
            for _, fut, _ in pending:  # no thread may still write into ``out``
                if fut is not None and not fut.cancelled():
                    with contextlib.suppress(Exception):
                        fut.result()
        return out

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class _TablesReader:
    """PyTables: for filters h5py lacks (blosc, lzo, bzip2) and pandas' table format."""

    name = "pytables"

    def __init__(self, path: Path, key: str, layout: str):
        import tables

        self.path, self.layout = path, layout
        try:
            self.file = tables.open_file(str(path), "r")
            self.node = self.file.get_node(f"/{key}/{'block0_values' if layout == 'fixed' else 'table'}")
        except (OSError, tables.NoSuchNodeError, tables.HDF5ExtError) as e:
            raise InputError(path, f"PyTables cannot open the data ({e})", _FIX_DOWNLOAD, field=key) from e

    def read(self, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
        try:
            if out is not None:
                out = out[: stop - start]
            if self.layout == "fixed":
                return self.node.read(start, stop, out=out)
            return self.node.read(start, stop, field="values_block_0", out=out)
        except Exception as e:  # PyTables raises HDF5ExtError, ValueError, ... on corrupt data
            raise InputError(self.path, f"cannot read rows {start}-{stop - 1} ({type(e).__name__}: {e}); the file "
                             "is corrupt or uses a compression PyTables cannot decode", _FIX_DOWNLOAD) from e

    def close(self) -> None:
        self.file.close()


def _default_threads() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    return max(1, min(4, n))


@contextlib.contextmanager
def _particle_reader(path, key: str = PARTICLE_KEY, threads: int | None = None):
    """Validate the particle file; yield ``(info, reader)`` with the file open."""
    path = _check_hdf5_file(path, PARTICLE_FILE)
    f = _open_h5py(path)
    reader = None
    try:
        node, layout = _particle_dataset_node(f, path, key)
        n_events, ncol, dtype = _dense_shape(node, layout)
        field = node.name.lstrip("/")
        if ncol != N_COLUMNS:
            extra = ""
            if ncol == N_COLUMNS - 1:
                extra = " -- the label column is missing (the black-box files have no label)"
            raise InputError(path, f"expected {N_COLUMNS} columns (700 x pT, eta, phi + label), found {ncol}"
                             f"{extra}", f"pass {PARTICLE_FILE} (the R&D file with truth labels)", field=field)
        if dtype.kind != "f":
            raise InputError(path, f"values have dtype {dtype}, expected floating point",
                             f"pass {PARTICLE_FILE} as published", field=field)
        if n_events == 0:
            raise InputError(path, "contains no events (0 rows)", _FIX_DOWNLOAD, field=field)

        threads = _default_threads() if threads is None else max(1, int(threads))
        filters: list[tuple[int, str]] = []
        if layout == "table":
            reader = _TablesReader(path, key, layout)
        else:
            filters = _filters(node)
            ids = {fid for fid, _ in filters}
            if node.chunks and node.chunks[1] == ncol and _FILTER_DEFLATE in ids and ids <= {
                    _FILTER_DEFLATE, _FILTER_SHUFFLE}:
                reader = _InflateReader(path, node, threads)
            elif all(h5py.h5z.filter_avail(fid) for fid in ids):
                reader = _H5pyReader(path, node)
            else:
                reader = _TablesReader(path, key, layout)

        # Read both ends: proves the data are decodable (a truncated file fails
        # here at the latest) and checks the labels before any work.
        heads = [(0, min(n_events, LABEL_SAMPLE_ROWS))]
        if n_events > LABEL_SAMPLE_ROWS:
            heads.append((max(LABEL_SAMPLE_ROWS, n_events - LABEL_SAMPLE_ROWS), n_events))
        n_sig = n_sample = 0
        for lo, hi in heads:
            block = reader.read(lo, hi)
            if isinstance(reader, _InflateReader):
                ref = _H5pyReader(path, node).read(lo, hi)
                if not np.array_equal(block, ref, equal_nan=True):
                    log.warning("%s: threaded inflate differs from h5py's decoding; using h5py", path)
                    reader.close()
                    reader = _H5pyReader(path, node)
                    block = ref
            labels = block[:, -1]
            _check_labels(labels, lo, path, field)
            n_sig += int((labels == 1).sum())
            n_sample += len(labels)

        info = {
            "path": str(path),
            "key": key,
            "layout": layout,
            "n_events": int(n_events),
            "n_columns": int(ncol),
            "n_particles": N_PARTICLES,
            "dtype": str(dtype),
            "filters": [name for _, name in filters],
            "chunk_rows": int(node.chunks[0]) if layout == "fixed" and node.chunks else None,
            "reader": reader.name,
            "threads": threads if reader.name == "inflate-threads" else 1,
            "inflate_library": INFLATE_LIBRARY if reader.name == "inflate-threads" else None,
            "file_bytes": path.stat().st_size,
            "labels_checked_rows": n_sample,
            "signal_fraction_sample": n_sig / n_sample,
        }
        yield info, reader
    finally:
        if reader is not None:
            reader.close()
        f.close()


def _check_labels(labels: np.ndarray, row0: int, path, field: str) -> None:
    bad = ~((labels == 0) | (labels == 1))
    if bad.any():
        i = int(np.argmax(bad))
        raise InputError(path, f"label (last column) must be 0 or 1; row {row0 + i} has {float(labels[i])} "
                         f"({int(bad.sum())} bad rows in rows {row0}-{row0 + len(labels) - 1})",
                         f"pass {PARTICLE_FILE} as published", field=f"{field}[:, {N_COLUMNS - 1}] (label)")


def inspect_particle_file(path, key: str = PARTICLE_KEY) -> dict:
    """Validate an LHCO R&D particle file without converting it.

    Checks, in order, each failure an ``InputError`` naming the file, the
    problem and the fix: the file exists, is not empty, is HDF5 and opens
    (not truncated), has the pandas key ``key`` in fixed (``df/block0_values``)
    or table format, has 2101 float columns and at least one row, its data
    decode, and the labels of the first and last ``LABEL_SAMPLE_ROWS`` rows
    are 0 or 1 (the import checks every row's label as it streams).

    Returns ``n_events``, ``n_columns``, ``n_particles``, ``layout``, ``dtype``,
    ``filters`` (HDF5 filter names), ``chunk_rows``, ``reader`` (which decoder
    the import will use), ``file_bytes`` and the signal fraction of the rows read.
    """
    with _particle_reader(path, key) as (info, _reader):
        return info


def _check_finite(block: np.ndarray, row0: int, path, field: str) -> int:
    """Raise on NaN/inf where it matters; return the padding slots holding one (ignored).

    A slot with pT == 0 is padding whatever its eta and phi: a file written
    straight from a generator can hold eta = NaN there (pT = 0 leaves eta
    undefined), and the slot is dropped anyway. Non-finite pT, a non-finite
    eta or phi of a particle with pT > 0, and a non-finite label are errors.
    """
    # NaN and inf propagate through a sum: one pass, no temporary. A sum that
    # overflows only sends us to the exact check, which then finds nothing.
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf, overflow: both go to the exact check
        if np.isfinite(block.sum()):
            return 0
    bad = ~np.isfinite(block)
    padding = block[:, 0:3 * N_PARTICLES:3] == 0  # pT == 0 (False for NaN pT)
    n_ignored = int((padding & (bad[:, 1:3 * N_PARTICLES:3] | bad[:, 2:3 * N_PARTICLES:3])).sum())
    if n_ignored:
        keep = ~padding
        bad[:, 1:3 * N_PARTICLES:3] &= keep
        bad[:, 2:3 * N_PARTICLES:3] &= keep
    if not bad.any():
        return n_ignored
    where = np.argwhere(bad)
    r, c = (int(x) for x in where[0])
    if c == N_COLUMNS - 1:
        what = "label"
    else:
        what = f"particle {c // 3} {('pt', 'eta', 'phi')[c % 3]}"
    rows = np.unique(where[:, 0])
    raise InputError(path, f"rows {row0}-{row0 + len(block) - 1}: {len(where)} NaN or infinite value(s) in "
                     f"{len(rows)} event(s), first in event {row0 + r} (row {row0 + r}), column {c} "
                     f"({what}) = {float(block[r, c])}" + ("" if c % 3 == 0 or c == N_COLUMNS - 1 else
                                                             f" with pT = {float(block[r, c - c % 3])} > 0"),
                     "repair or drop those events at the source; only slots with pT = 0 (padding) may hold NaN "
                     "(the published file has none: " + _FIX_DOWNLOAD + ")", field=f"{field}[:, {c}] ({what})")


def _dense_to_table(block: np.ndarray, row0: int, id0: int, names: pa.Array, path, field: str):
    """One dense chunk (n, 2101) -> (raw-event table, particle counts, labels, n). Vectorised.

    ``n`` counts the padding slots holding a NaN/inf eta or phi (dropped).
    Allocates only per-particle arrays (no dense float temporaries; a block
    holding NaN/inf gets one (n, 2101) boolean mask, 1/8 of its size): the
    dense chunk is by far the largest object and is reused by the caller.
    """
    n = len(block)
    n_nan_padding = _check_finite(block, row0, path, field)
    labels = block[:, -1]
    _check_labels(labels, row0, path, field)
    parts = block[:, : 3 * N_PARTICLES].reshape(n, N_PARTICLES, 3)  # a view
    pt = parts[:, :, 0]
    if pt.min() < 0:
        r, p = (int(x) for x in np.argwhere(pt < 0)[0])
        raise InputError(path, f"row {row0 + r}: particle {p} has negative pT {float(pt[r, p])}",
                         "pT must be >= 0 (0 marks padding)", field=f"{field}[:, {3 * p}] (pt)")
    mask = pt > 0  # pT == 0 is padding
    counts = mask.sum(axis=1, dtype=np.int32)
    offsets = np.zeros(n + 1, np.int32)
    np.cumsum(counts, out=offsets[1:])
    # row-major boolean indexing keeps events in order and particles in file order
    values = [pa.array(parts[:, :, k][mask].astype(np.float32)) for k in range(3)]
    struct = pa.StructArray.from_arrays(values, fields=list(PARTICLE_TYPE.value_type))
    particles = pa.ListArray.from_arrays(pa.array(offsets), struct, type=PARTICLE_TYPE)
    label8 = labels.astype(np.int8)
    table = pa.Table.from_arrays(
        [
            pa.array(np.arange(id0 + row0, id0 + row0 + n, dtype=np.int64)),
            names.take(pa.array(label8)),
            pa.array(label8),
            particles,
        ],
        schema=RAW_SCHEMA,
    )
    return table, counts, label8, n_nan_padding


def _process_lookup(process_names: Mapping | None) -> pa.Array:
    names = dict(DEFAULT_PROCESS_NAMES if process_names is None else process_names)
    missing = [k for k in (0, 1) if k not in names]
    if missing:
        raise ValueError(f"process_names must name labels 0 and 1, got {names!r}")
    for k in (0, 1):
        if not isinstance(names[k], str) or not names[k]:
            raise ValueError(f"process_names[{k}] must be a non-empty string, got {names[k]!r}")
    return pa.array([names[0], names[1]], pa.string())


def import_particles(
    path,
    output,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    process_names: Mapping[int, str] | None = None,
    max_events: int | None = None,
    id_tag: str = "lhco",
    key: str = PARTICLE_KEY,
    threads: int | None = None,
) -> dict:
    """Stream ``events_anomalydetection_v2.h5`` into a raw-event Parquet file.

    The file is validated first (:func:`inspect_particle_file`), then read in
    dense blocks of at most ``DENSE_BLOCK_ROWS`` rows (the next block is read
    while the current one is converted) and written as one row group per
    ``chunk_size`` events through :func:`resonant.io.parquet_writer`: if
    anything fails, no output is left. Particles with pT == 0 are padding and
    dropped, whatever their eta and phi (a generator's file may hold NaN
    there); the others keep the file's order. Event ``i`` gets
    ``event_id_base(id_tag, 0) + i``, its label from the last column and its
    process from ``process_names`` (default 0 -> "qcd", 1 -> "signal").
    NaN/inf values (a pT, the eta or phi of a particle with pT > 0, a label),
    negative pT and labels other than 0/1 raise ``InputError`` naming the
    rows and the column. ``key`` is the pandas key of the DataFrame (the
    workflow's ``dataset.lhco.key``, default ``"df"``).

    Memory: two dense blocks (~170 MB each at 10k rows of float64) plus one
    converted chunk (~2 kB per event), whatever the file size.
    ``threads`` sets the decompression threads of the zlib reader (default:
    up to 4 CPUs). Returns statistics (counts per process, multiplicities,
    events/s).
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if max_events is not None and max_events < 1:
        raise ValueError(f"max_events must be >= 1 or None, got {max_events}")
    names = _process_lookup(process_names)
    id0 = event_id_base(id_tag, 0)
    output = Path(output)
    t_start, cpu_start = time.perf_counter(), time.process_time()
    with _particle_reader(path, key, threads) as (info, reader):
        path = Path(info["path"])
        field = f"{key}/block0_values" if info["layout"] == "fixed" else f"{key}/table"
        n_total = info["n_events"]
        n = n_total if max_events is None else min(n_total, int(max_events))
        if n >= 2 ** 40:  # would spill into the id tag bits
            raise InputError(path, f"{n} events are too many for one id tag", "split the file", field=field)
        chunks = [(s, min(s + chunk_size, n)) for s in range(0, n, chunk_size)]
        block_rows = min(chunk_size, DENSE_BLOCK_ROWS)
        blocks = [(s, min(s + block_rows, e)) for c0, e in chunks for s in range(c0, e, block_rows)]
        log.info("%s: %d of %d events, %d chunk(s) of <= %d rows, %s layout, filters %s, reader %s",
                 path, n, n_total, len(chunks), chunk_size, info["layout"], info["filters"] or "none",
                 info["reader"])
        meta = {
            "source": str(path), "source_format": "lhco-rnd-particles", "key": key, "id_tag": id_tag,
            "event_id_base": id0, "process_names": dict(enumerate(names.to_pylist())), "n_events": n,
        }
        n_particles = 0
        per_label = np.zeros(2, np.int64)
        mult_min, mult_max, n_empty, n_full = N_PARTICLES + 1, -1, 0, 0
        n_nan_padding = 0  # padding slots (pT == 0) with a NaN/inf eta or phi: dropped like all padding
        pending: list[pa.Table] = []  # converted blocks of the current chunk
        pending_counts: list[np.ndarray] = []
        pending_labels: list[np.ndarray] = []
        with parquet_writer(output, RAW_SCHEMA, metadata=meta) as writer, \
                ThreadPoolExecutor(1, thread_name_prefix="lhco-prefetch") as prefetch:
            # Two dense buffers, reused: block i+1 is read into one while block i,
            # in the other, is converted (fresh 100+ MB arrays would page-fault anew).
            buffers = [np.empty((block_rows, N_COLUMNS), info["dtype"]) for _ in range(min(2, len(blocks)))]
            future = prefetch.submit(reader.read, *blocks[0], buffers[0])
            i_chunk = 0
            try:
                for i, (lo, hi) in enumerate(blocks):
                    block = future.result()
                    if i + 1 < len(blocks):
                        future = prefetch.submit(reader.read, *blocks[i + 1], buffers[(i + 1) % 2])
                    table, counts, label8, nan_padding = _dense_to_table(block, lo, id0, names, path, field)
                    n_nan_padding += nan_padding
                    del block
                    pending.append(table)
                    pending_counts.append(counts)
                    pending_labels.append(label8)
                    c0, c1 = chunks[i_chunk]
                    if hi < c1:
                        continue
                    # the chunk is complete: one row group
                    writer.write_table(pa.concat_tables(pending), row_group_size=c1 - c0)
                    counts, label8 = np.concatenate(pending_counts), np.concatenate(pending_labels)
                    pending, pending_counts, pending_labels = [], [], []
                    i_chunk += 1
                    n_particles += int(counts.sum())
                    per_label += np.bincount(label8, minlength=2)[:2]
                    mult_min = min(mult_min, int(counts.min()))
                    mult_max = max(mult_max, int(counts.max()))
                    n_empty += int((counts == 0).sum())
                    n_full += int((counts == N_PARTICLES).sum())
                    elapsed = time.perf_counter() - t_start
                    log.info("%s: chunk %d/%d rows %d-%d: %d particles, %d signal; %d/%d events (%.0f%%), "
                             "%.0f events/s", path.name, i_chunk, len(chunks), c0, c1 - 1, int(counts.sum()),
                             int((label8 == 1).sum()), c1, n, 100.0 * c1 / n, c1 / max(elapsed, 1e-9))
            finally:
                future.cancel()
    seconds = time.perf_counter() - t_start
    cpu_seconds = time.process_time() - cpu_start
    labels = names.to_pylist()
    stats = {
        "source": str(path),
        "output": str(output),
        "n_events": n,
        "n_events_in_file": n_total,
        "n_particles": n_particles,
        "n_chunks": len(chunks),
        "chunk_size": chunk_size,
        "processes": {labels[0]: int(per_label[0]), labels[1]: int(per_label[1])}
        if labels[0] != labels[1] else {labels[0]: int(per_label.sum())},
        "n_background": int(per_label[0]),
        "n_signal": int(per_label[1]),
        "multiplicity": {"min": mult_min, "max": mult_max, "mean": n_particles / n},
        "n_events_without_particles": n_empty,
        "n_events_with_700_particles": n_full,
        "n_padding_slots_non_finite": n_nan_padding,
        "event_id_first": id0,
        "event_id_last": id0 + n - 1,
        "reader": info["reader"],
        "inflate_library": info["inflate_library"],
        "threads": info["threads"],
        "seconds": seconds,
        "events_per_s": n / seconds if seconds > 0 else float("inf"),
        "cpu_seconds": cpu_seconds,
        "events_per_cpu_s": n / cpu_seconds if cpu_seconds > 0 else float("inf"),
    }
    if n_empty:
        log.warning("%s: %d event(s) have no particle at all", path, n_empty)
    if n_nan_padding:
        log.info("%s: %d padding slot(s) (pT = 0) hold a NaN or infinite eta/phi: dropped as padding", path,
                 n_nan_padding)
    if n_full:
        log.warning("%s: %d event(s) fill all 700 slots (the file may have truncated them)", path, n_full)
    log.info("%s -> %s: %d events, %d particles (%.1f/event), %.1f s, %.0f events/s", path, output, n,
             n_particles, n_particles / n, seconds, stats["events_per_s"])
    return stats


# --------------------------------------------------------------------------- features files


def _open_features_store(path: Path, key: str | None):
    """Open with pandas, resolve the key; return (store, key, columns, nrows)."""
    import pandas as pd

    f = _open_h5py(path)  # distinguishes truncated files from other problems
    f.close()
    try:
        store = pd.HDFStore(str(path), mode="r")
    except Exception as e:  # PyTables/pandas raise various types on bad files
        raise InputError(path, f"pandas cannot open the HDF5 file ({type(e).__name__}: {e})", _FIX_DOWNLOAD) from e
    try:
        keys = [k.lstrip("/") for k in store.keys()]
        if key is None:
            if len(keys) == 1:
                key = keys[0]
            elif "df" in keys:
                key = "df"
            else:
                raise InputError(path, f"{'no pandas object' if not keys else 'several pandas objects'} in the "
                                 f"file (keys: {', '.join(keys) or 'none'})",
                                 f"pass {FEATURES_FILE} as published, or the key to read (key=...)")
        elif key.lstrip("/") not in keys:
            raise InputError(path, f"no key '{key}' (keys in the file: {', '.join(keys) or 'none'})",
                             "pass the key under which the features DataFrame was stored", field=key)
        key = key.lstrip("/")
        storer = store.get_storer(key)
        nrows = int(storer.nrows if storer.is_table else storer.shape[0])
        head = store.select(key, start=0, stop=0)
        columns = [str(c) for c in head.columns]
        return store, key, columns, nrows
    except BaseException:
        store.close()
        raise


def _jet_kinematics(px, py, pz, m):
    pt = np.hypot(px, py)
    with np.errstate(divide="ignore", invalid="ignore"):
        eta = np.where(pt > 0, np.arcsinh(pz / np.where(pt > 0, pt, 1.0)), 0.0)
    phi = np.arctan2(py, px)
    energy = np.sqrt(px * px + py * py + pz * pz + m * m)
    return pt, eta, phi, energy


def _features_chunk(df, row0: int, has_label: bool, path, lead_pt_min: float, jet_eta_max: float):
    """Compute the jets-table columns of one chunk; return (columns, selection mask, labels, n_swapped)."""
    n = len(df)
    cols = {}
    for c in FEATURE_COLUMNS + ((LABEL_COLUMN,) if has_label else ()):
        v = df[c].to_numpy(dtype=np.float64, na_value=np.nan)
        bad = ~np.isfinite(v)
        if bad.any():
            i = int(np.argmax(bad))
            raise InputError(path, f"{int(bad.sum())} NaN or infinite value(s) in rows {row0}-{row0 + n - 1}, "
                             f"first at row {row0 + i} ({float(v[i])})",
                             "repair or drop those events at the source (" + _FIX_DOWNLOAD + ")", field=c)
        cols[c] = v
    for j in (1, 2):
        m = cols[f"mj{j}"]
        if (m < 0).any():
            i = int(np.argmax(m < 0))
            raise InputError(path, f"negative jet mass {float(m[i])} at row {row0 + i}", "jet masses must be >= 0",
                             field=f"mj{j}")
    if has_label:
        lab = cols[LABEL_COLUMN]
        bad = ~((lab == 0) | (lab == 1))
        if bad.any():
            i = int(np.argmax(bad))
            raise InputError(path, f"label must be 0 or 1; row {row0 + i} has {float(lab[i])}",
                             f"pass {FEATURES_FILE} as published", field=LABEL_COLUMN)
        labels = lab.astype(np.int8)
    else:
        labels = np.zeros(n, np.int8)

    jets = []
    for j in (1, 2):
        px, py, pz, m = (cols[f"{v}j{j}"] for v in ("px", "py", "pz", "m"))
        pt, eta, phi, energy = _jet_kinematics(px, py, pz, m)
        jets.append({"pt": pt, "eta": eta, "phi": phi, "m": m, "E": energy, "px": px, "py": py, "pz": pz,
                     "tau1": cols[f"tau1j{j}"], "tau2": cols[f"tau2j{j}"], "tau3": cols[f"tau3j{j}"]})
    swap = jets[1]["pt"] > jets[0]["pt"]
    lead = {k: np.where(swap, jets[1][k], jets[0][k]) for k in jets[0]}
    sub = {k: np.where(swap, jets[0][k], jets[1][k]) for k in jets[0]}
    e = lead["E"] + sub["E"]
    p2 = (lead["px"] + sub["px"]) ** 2 + (lead["py"] + sub["py"]) ** 2 + (lead["pz"] + sub["pz"]) ** 2
    mjj = np.sqrt(np.maximum(e * e - p2, 0.0))
    select = (
        (lead["pt"] > lead_pt_min)
        & (sub["pt"] > 0)
        & (np.abs(lead["eta"]) < jet_eta_max)
        & (np.abs(sub["eta"]) < jet_eta_max)
    )
    out = {"mjj": mjj}
    for name, jet in zip(JETS, (lead, sub)):
        for f in ("pt", "eta", "phi", "m", "tau1", "tau2", "tau3"):
            out[f"{name}_{f}"] = jet[f]
    return out, select, labels, int(swap.sum())


class _FeatureSource:
    """One features file, opened and validated (columns, rows) before anything is written."""

    def __init__(self, path, key: str | None, id_tag: str, names: pa.Array, role: str):
        self.path = _check_hdf5_file(path, EXTRA_QCD_FILE if role == "extra_background" else FEATURES_FILE)
        self.id_tag, self.id0, self.names, self.role = id_tag, event_id_base(id_tag, 0), names, role
        self.store, self.key, columns, self.nrows = _open_features_store(self.path, key)
        try:
            missing = [c for c in FEATURE_COLUMNS if c not in columns]
            if missing:
                raise InputError(self.path, f"column(s) {', '.join(repr(c) for c in missing)} missing (has: "
                                 f"{', '.join(columns)})", f"pass {FEATURES_FILE} or {EXTRA_QCD_FILE} as published",
                                 field=missing[0])
            if self.nrows == 0:
                raise InputError(self.path, "contains no events (0 rows)", _FIX_DOWNLOAD, field=self.key)
        except BaseException:
            self.store.close()
            raise
        self.has_label = LABEL_COLUMN in columns
        if not self.has_label:
            log.info("%s: no '%s' column: every event is labelled 0 (background)", self.path, LABEL_COLUMN)

    def stream(self, writer, lead_pt_min: float, jet_eta_max: float, chunk_rows: int) -> dict:
        read_per_label = np.zeros(2, np.int64)
        kept_per_label = np.zeros(2, np.int64)
        n_swapped = 0
        path, key = self.path, self.key
        for lo in range(0, self.nrows, chunk_rows):
            hi = min(lo + chunk_rows, self.nrows)
            try:
                df = self.store.select(key, start=lo, stop=hi)
            except Exception as e:
                raise InputError(path, f"cannot read rows {lo}-{hi - 1} ({type(e).__name__}: {e})",
                                 _FIX_DOWNLOAD, field=key) from e
            cols, select, labels, swapped = _features_chunk(df, lo, self.has_label, path, lead_pt_min, jet_eta_max)
            del df
            n_swapped += swapped
            read_per_label += np.bincount(labels, minlength=2)[:2]
            kept = labels[select]
            kept_per_label += np.bincount(kept, minlength=2)[:2]
            if len(kept):
                writer.write_table(_jets_table(cols, select, kept, lo, self.id0, self.names))
            log.info("%s: rows %d-%d: %d of %d pass the selection", path.name, lo, hi - 1, len(kept), hi - lo)
        n_kept = int(kept_per_label.sum())
        if n_kept == 0:
            raise InputError(path, f"no event of {self.nrows} passes the selection (both jets |eta| < "
                             f"{jet_eta_max}, leading jet pT > {lead_pt_min} GeV)",
                             "check the selection settings (lead_pt_min, jet_eta_max) and the file")
        if read_per_label[1] > 0 and kept_per_label[1] == 0:
            warnings.warn(f"{path}: {int(read_per_label[1])} signal events read but none passes the selection",
                          PhysicsWarning, stacklevel=3)
        names = self.names.to_pylist()
        log.info("%s: %d of %d events pass the selection (%.1f%%; signal %d of %d); %d events had j2 harder "
                 "than j1", path, n_kept, self.nrows, 100.0 * n_kept / self.nrows, int(kept_per_label[1]),
                 int(read_per_label[1]), n_swapped)
        return {
            "source": str(path),
            "key": key,
            "id_tag": self.id_tag,
            "event_id_first": self.id0,
            "n_events_read": self.nrows,
            "n_events_selected": n_kept,
            "selection_efficiency": n_kept / self.nrows,
            "label_column": self.has_label,
            "read": {names[0]: int(read_per_label[0]), names[1]: int(read_per_label[1])},
            "selected": {names[0]: int(kept_per_label[0]), names[1]: int(kept_per_label[1])},
            "n_background": int(kept_per_label[0]),
            "n_signal": int(kept_per_label[1]),
            "n_jets_reordered": n_swapped,
        }

    def close(self) -> None:
        self.store.close()


def import_features(
    path,
    output,
    id_tag: str = "lhco",
    process_names: Mapping[int, str] | None = None,
    lead_pt_min: float = 1200.0,
    jet_eta_max: float = 2.5,
    key: str | None = None,
    chunk_rows: int = FEATURES_CHUNK_ROWS,
    extra_background=None,
    extra_id_tag: str = "lhco-extra-qcd",
    extra_process: str | None = None,
    extra_key: str | None = None,
) -> dict:
    """Import an LHCO high-level features file into the jets table (no constituents).

    Reads ``pxj1 pyj1 pzj1 mj1 tau1j1 tau2j1 tau3j1`` and the same for ``j2``
    (and ``label``; absent in the extra-QCD file -> label 0) from pandas'
    fixed or table format, ``chunk_rows`` rows at a time. Per event the two
    jets are ordered by pT (``j1`` leading); pt, eta, phi come from
    (px, py, pz), m from mj, n is null (the file has no constituent count),
    m_jj from the dijet four-vector. The clustering's selection is applied:
    both jets with |eta| < ``jet_eta_max`` and leading pT > ``lead_pt_min``.
    Event ``i`` (row ``i`` of the file, before selection) gets
    ``event_id_base(id_tag, 0) + i``: the particle import of the same file
    gives it the same id.

    ``extra_background`` (``events_anomalydetection_qcd_extra_inneronly_features.h5``)
    is appended to the same output with ids from ``extra_id_tag`` and the
    process ``extra_process`` (default ``"<background process>_extra"``: these
    events lie in the signal region only, so mixing them into the ordinary
    background would enrich the SR; name the background process itself to
    do so anyway).

    ``key`` defaults to the file's only pandas object. Missing columns,
    NaN/inf, negative masses, bad labels and a selection that keeps no event
    of a file raise ``InputError`` (both files are validated before anything
    is written); no output is left then. Returns counts before and after the
    selection (for the extra file under ``"extra_background"``).
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    names = _process_lookup(process_names)
    output = Path(output)
    t_start = time.perf_counter()
    sources: list[_FeatureSource] = []
    try:
        sources.append(_FeatureSource(path, key, id_tag, names, "features"))
        if extra_background is not None:
            if event_id_base(extra_id_tag, 0) == event_id_base(id_tag, 0):
                raise ValueError(f"extra_id_tag {extra_id_tag!r} gives the same event ids as id_tag {id_tag!r}")
            extra_names = pa.array([extra_process or f"{names[0].as_py()}_extra", names[1].as_py()], pa.string())
            sources.append(_FeatureSource(extra_background, extra_key, extra_id_tag, extra_names,
                                          "extra_background"))
        meta = {
            "source_format": "lhco-rnd-features", "lead_pt_min": lead_pt_min, "jet_eta_max": jet_eta_max,
            "sources": [{"role": src.role, "path": str(src.path), "key": src.key, "id_tag": src.id_tag,
                         "event_id_base": src.id0, "label_column": src.has_label,
                         "process_names": dict(enumerate(src.names.to_pylist()))} for src in sources],
        }
        with parquet_writer(output, JETS_FEATURES_ONLY_SCHEMA, metadata=meta) as writer:
            per_source = [src.stream(writer, lead_pt_min, jet_eta_max, chunk_rows) for src in sources]
    finally:
        for src in sources:
            src.close()
    stats = {**per_source[0], "output": str(output),
             "selection": {"lead_pt_min": lead_pt_min, "jet_eta_max": jet_eta_max},
             "seconds": time.perf_counter() - t_start}
    if len(per_source) > 1:
        stats["extra_background"] = per_source[1]
    log.info("-> %s: %d events (%s)", output, sum(p["n_events_selected"] for p in per_source),
             ", ".join(f"{p['n_events_selected']} from {Path(p['source']).name}" for p in per_source))
    return stats


def _jets_table(cols: dict, select: np.ndarray, labels: np.ndarray, row0: int, id0: int,
                names: pa.Array) -> pa.Table:
    """The selected rows of one chunk as a table in ``JETS_FEATURES_ONLY_SCHEMA``."""
    rows = np.flatnonzero(select)
    n = len(rows)
    arrays = []
    for fld in JETS_FEATURES_ONLY_SCHEMA:
        if fld.name == "event_id":
            arrays.append(pa.array(id0 + row0 + rows.astype(np.int64)))
        elif fld.name == "process":
            arrays.append(names.take(pa.array(labels)))
        elif fld.name == "label":
            arrays.append(pa.array(labels))
        elif fld.name.endswith("_n"):
            arrays.append(pa.nulls(n, fld.type))  # no constituent count in the features file
        else:
            arrays.append(pa.array(cols[fld.name][rows].astype(np.float32)))
    return pa.Table.from_arrays(arrays, schema=JETS_FEATURES_ONLY_SCHEMA)
