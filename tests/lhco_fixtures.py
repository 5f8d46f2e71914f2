"""Small files in exactly the layouts of the official LHC Olympics 2020 R&D data.

* Particle file (``events_anomalydetection_v2.h5``): a pandas DataFrame of
  2101 float columns (700 particles x pT, eta, phi, zero padded, then the
  label) written with ``to_hdf(path, key="df")`` -- pandas' fixed format,
  ``df/block0_values`` of shape (N, 2101).
* Features files (``events_anomalydetection_v2.features.h5`` and the extra
  QCD file): a DataFrame with columns ``FEATURE_COLUMNS`` (+ ``label``).

``write_particle_file_chunked`` builds the same pandas fixed layout with
PyTables one chunk of rows at a time, for files too large to hold in memory
(the benchmark); a test checks it against ``to_hdf``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

N_PARTICLES = 700
N_COLUMNS = 3 * N_PARTICLES + 1
FEATURE_COLUMNS = [f"{v}j{j}" for j in (1, 2) for v in ("px", "py", "pz", "m", "tau1", "tau2", "tau3")]


def make_particle_events(n: int, seed: int = 0, min_particles: int = 0, max_particles: int = 60,
                         signal_fraction: float = 0.2, dtype=np.float64) -> np.ndarray:
    """Dense (n, 2101) events: particles first in each row, zeros after, label last."""
    rng = np.random.default_rng(seed)
    dense = np.zeros((n, N_COLUMNS), dtype=dtype)
    counts = rng.integers(min_particles, max_particles + 1, n)
    filled = np.arange(N_PARTICLES)[None, :] < counts[:, None]
    total = int(counts.sum())
    view = dense[:, : 3 * N_PARTICLES].reshape(n, N_PARTICLES, 3)
    view[..., 0][filled] = rng.exponential(20.0, total) + 0.5  # pT > 0
    view[..., 1][filled] = rng.normal(0.0, 1.5, total)
    view[..., 2][filled] = rng.uniform(-np.pi, np.pi, total)
    dense[:, -1] = rng.random(n) < signal_fraction
    return dense


def undefined_padding(dense: np.ndarray, eta=np.nan, phi=0.0) -> np.ndarray:
    """A copy whose padding slots (pT = 0) hold what a generator writes there straight from (px, py, pz):

    eta = asinh(pz / pT) is undefined (NaN) at pT = 0, phi = atan2(0, 0) = 0.
    """
    out = dense.copy()
    view = out[:, : 3 * N_PARTICLES].reshape(len(out), N_PARTICLES, 3)
    padding = view[..., 0] == 0
    view[..., 1][padding] = eta
    view[..., 2][padding] = phi
    return out


def particle_frame(dense: np.ndarray) -> pd.DataFrame:
    """The official DataFrame: integer column labels 0..2100, RangeIndex."""
    return pd.DataFrame(dense)


def write_particle_file(path, dense: np.ndarray, complib: str | None = None, complevel: int | None = None,
                        format: str = "fixed", key: str = "df") -> None:
    """``DataFrame(dense).to_hdf(path, key="df")`` -- pandas' fixed format by default."""
    kwargs = {}
    if complib is not None:
        kwargs.update(complib=complib, complevel=5 if complevel is None else complevel)
    particle_frame(dense).to_hdf(path, key=key, mode="w", format=format, **kwargs)


def write_particle_file_chunked(path, n_events: int, make_chunk, chunk_rows: int = 10_000,
                                complib: str | None = "zlib", complevel: int = 5, dtype=np.float64) -> None:
    """Write pandas' fixed layout (as ``to_hdf(key="df", complib=, complevel=)``) in chunks.

    ``make_chunk(start, stop)`` returns the dense rows ``start..stop-1``.
    Same nodes, attributes, chunk shape and filters as pandas: PyTables'
    automatic chunk shape for a (N, 2101) CArray, shuffle + the compressor.
    ``complib=None`` writes the uncompressed, contiguous array of pandas' default.
    """
    import tables

    filters = tables.Filters(complevel, complib, fletcher32=False) if complib else None
    atom = tables.Atom.from_dtype(np.dtype(dtype))
    with tables.open_file(str(path), "w") as h5:
        group = h5.create_group("/", "df")
        attrs = group._v_attrs
        attrs.pandas_type = "frame"
        attrs.encoding = "UTF-8"
        attrs.errors = "strict"
        attrs.ndim = 2
        attrs.nblocks = 1

        def index_array(name: str, values: np.ndarray) -> None:
            setattr(attrs, f"{name}_variety", "regular")
            if filters is not None:
                arr = h5.create_carray(group, name, tables.Int64Atom(), values.shape, filters=filters)
                arr[:] = values
            else:
                arr = h5.create_array(group, name, values)
            arr._v_attrs.kind = "integer"
            arr._v_attrs.name = None
            arr._v_attrs.transposed = True

        index_array("axis0", np.arange(N_COLUMNS, dtype=np.int64))
        index_array("axis1", np.arange(n_events, dtype=np.int64))
        index_array("block0_items", np.arange(N_COLUMNS, dtype=np.int64))
        shape = (n_events, N_COLUMNS)
        if filters is not None:
            values = h5.create_carray(group, "block0_values", atom, shape, filters=filters)
        else:
            values = h5.create_array(group, "block0_values", atom=atom, shape=shape)
        values._v_attrs.transposed = True
        for start in range(0, n_events, chunk_rows):
            stop = min(start + chunk_rows, n_events)
            values[start:stop] = make_chunk(start, stop)


def expected_particles(dense: np.ndarray) -> list[np.ndarray]:
    """Per event, the (k, 3) float32 array of non-padding particles, in file order (loop: the reference)."""
    out = []
    for row in dense:
        parts = row[: 3 * N_PARTICLES].reshape(N_PARTICLES, 3)
        out.append(parts[parts[:, 0] != 0].astype(np.float32))
    return out


def make_features_frame(n: int, seed: int = 0, signal_fraction: float = 0.1, with_label: bool = True,
                        label_dtype=np.float64) -> pd.DataFrame:
    """Features in the official columns; j1/j2 in random pT order; some events fail the selection."""
    rng = np.random.default_rng(seed)
    data = {}
    for j in (1, 2):
        pt = rng.uniform(300.0, 2500.0, n)
        eta = rng.normal(0.0, 1.6, n)
        phi = rng.uniform(-np.pi, np.pi, n)
        data[f"pxj{j}"] = pt * np.cos(phi)
        data[f"pyj{j}"] = pt * np.sin(phi)
        data[f"pzj{j}"] = pt * np.sinh(eta)
        data[f"mj{j}"] = rng.uniform(10.0, 700.0, n)
        tau1 = rng.uniform(0.1, 0.9, n)
        data[f"tau1j{j}"] = tau1
        data[f"tau2j{j}"] = tau1 * rng.uniform(0.1, 1.0, n)
        data[f"tau3j{j}"] = data[f"tau2j{j}"] * rng.uniform(0.1, 1.0, n)
    df = pd.DataFrame({c: data[c] for c in FEATURE_COLUMNS})
    if with_label:
        df["label"] = (rng.random(n) < signal_fraction).astype(label_dtype)
    return df


def write_features_file(path, df: pd.DataFrame, format: str = "fixed", key: str = "df") -> None:
    df.to_hdf(path, key=key, mode="w", format=format)
