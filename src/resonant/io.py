"""File I/O shared by every stage: atomic writes, Parquet and JSON helpers.

Nothing is ever half-written: outputs go to a temporary name in the same
directory and are renamed into place only when complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .errors import InputError


@contextlib.contextmanager
def atomic_path(path, suffix: str | None = None):
    """Yield a temporary path next to ``path``; rename it to ``path`` on success.

    On any exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=suffix if suffix is not None else ".tmp" + path.suffix,
        dir=path.parent,
    )
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def write_json(obj, path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(o):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def read_json(path):
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file does not exist", "run the stage that produces it")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise InputError(path, f"not valid JSON ({e})", "delete it and rerun the producing stage") from e


def _dictionary_columns(schema: pa.Schema) -> list[str]:
    """Dictionary-encode only string columns (process names): for floats it costs time and space."""
    return [f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]


def write_table(table: pa.Table, path, row_group_size: int | None = 50_000, metadata: dict | None = None) -> None:
    """Write an Arrow table to Parquet atomically (zstd), with optional JSON metadata."""
    if metadata:
        meta = dict(table.schema.metadata or {})
        meta[b"resonant"] = json.dumps(metadata, sort_keys=True, default=_json_default).encode()
        table = table.replace_schema_metadata(meta)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd", row_group_size=row_group_size,
                       use_dictionary=_dictionary_columns(table.schema))


@contextlib.contextmanager
def parquet_writer(path, schema: pa.Schema, metadata: dict | None = None):
    """Stream row groups into a Parquet file written atomically.

    Yields a ``pyarrow.parquet.ParquetWriter``; the file appears under its
    final name only after the writer closed without error.
    """
    if metadata:
        meta = dict(schema.metadata or {})
        meta[b"resonant"] = json.dumps(metadata, sort_keys=True, default=_json_default).encode()
        schema = schema.with_metadata(meta)
    with atomic_path(path) as tmp:
        writer = pq.ParquetWriter(tmp, schema, compression="zstd", use_dictionary=_dictionary_columns(schema))
        try:
            yield writer
        finally:
            writer.close()


def open_parquet(path) -> pq.ParquetFile:
    """Open a Parquet file, turning missing/corrupt files into an ``InputError``."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file does not exist", "check the path or run the stage that produces it")
    if path.stat().st_size == 0:
        raise InputError(path, "file is empty (0 bytes)", "delete it and rerun the producing stage")
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise InputError(path, f"not a readable Parquet file ({e})", "delete it and rerun the producing stage") from e


def read_table(path, columns=None, required: list[str] | None = None) -> pa.Table:
    """Read a Parquet file; ``required`` columns are checked before reading data."""
    pf = open_parquet(path)
    names = pf.schema_arrow.names
    for col in required or []:
        if col not in names:
            raise InputError(path, f"column '{col}' is missing (has: {', '.join(names)})",
                             "regenerate the file with this version of the workflow", field=col)
    try:
        return pf.read(columns=columns)
    except (pa.ArrowInvalid, OSError) as e:
        raise InputError(path, f"corrupt Parquet data ({e})", "delete it and rerun the producing stage") from e


def table_metadata(path) -> dict:
    """The JSON metadata stored by :func:`write_table` (empty dict if none)."""
    meta = open_parquet(path).schema_arrow.metadata or {}
    raw = meta.get(b"resonant")
    return json.loads(raw) if raw else {}


def write_h5(path, arrays: dict, attrs: dict | None = None, chunk_rows: int = 4096) -> None:
    """Write named arrays (same first dimension) to HDF5, chunked and compressed, atomically.

    ``attrs`` (JSON-serialisable) go to the file's attributes as JSON strings.
    """
    import h5py

    with atomic_path(path, suffix=".tmp.h5") as tmp:
        with h5py.File(tmp, "w") as f:
            for name, a in arrays.items():
                chunks = (min(chunk_rows, max(len(a), 1)), *a.shape[1:]) if a.ndim else None
                f.create_dataset(name, data=a, chunks=chunks, compression="gzip", compression_opts=4, shuffle=True)
            for k, v in (attrs or {}).items():
                f.attrs[k] = json.dumps(v, sort_keys=True, default=_json_default)


def read_h5(path, names=None) -> tuple[dict, dict]:
    """(arrays, attrs) of an HDF5 file written by :func:`write_h5`."""
    import h5py

    path = Path(path)
    if not path.exists():
        raise InputError(path, "file does not exist", "run the stage that produces it")
    try:
        with h5py.File(path, "r") as f:
            missing = [n for n in (names or []) if n not in f]
            if missing:
                raise InputError(path, f"dataset(s) {missing} missing (has: {list(f)})",
                                 "regenerate the file with this version of the workflow", field=missing[0])
            arrays = {n: f[n][()] for n in (names or list(f))}
            attrs = {k: json.loads(v) for k, v in f.attrs.items()}
    except OSError as e:
        raise InputError(path, f"not a readable HDF5 file ({e})", "delete it and rerun the producing stage") from e
    return arrays, attrs
