"""High-level jet features from the jet table (jets ordered by mass).

mj1 is the lighter jet's mass, mj2 the heavier's, dmj = mj2 - mj1; tau21 and
tau32 of the lighter (``_j1``) and heavier (``_j2``) jet, with the 1e-5
regulator of classic CATHODE. Latent coordinates ``z0``, ``z1``, ... (the
tables of the latent branches) are read as they are.
"""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa

from .errors import InputError

EPS = 1e-5
FEATURES = ("mj1", "mj2", "dmj", "tau21_j1", "tau21_j2", "tau32_j1", "tau32_j2", "mjj")
LATENT = re.compile(r"z\d+")


def latent_names(dim: int) -> list[str]:
    return [f"z{i}" for i in range(dim)]


def _col(table: pa.Table, name: str) -> np.ndarray:
    return table.column(name).to_numpy().astype(np.float64)


def by_mass(table: pa.Table) -> dict[str, np.ndarray]:
    """Per-jet arrays re-ordered so that jet 1 is the lighter one."""
    m_a, m_b = _col(table, "j1_m"), _col(table, "j2_m")
    swap = m_a > m_b
    out = {}
    for f in ("m", "tau1", "tau2", "tau3"):
        a, b = _col(table, f"j1_{f}"), _col(table, f"j2_{f}")
        out[f"light_{f}"] = np.where(swap, b, a)
        out[f"heavy_{f}"] = np.where(swap, a, b)
    return out


def high_level(table: pa.Table, names, source="table") -> np.ndarray:
    """An (N, len(names)) float32 array of the named features."""
    unknown = [n for n in names if n not in FEATURES and not LATENT.fullmatch(n)]
    if unknown:
        raise InputError(source, f"unknown feature(s) {unknown}", f"use some of {', '.join(FEATURES)}")
    latent = [n for n in names if LATENT.fullmatch(n)]
    if latent:
        missing = [n for n in latent if n not in table.column_names]
        if missing:
            raise InputError(source, f"latent column(s) {missing} missing", "encode the table with the encoder "
                             "the method was configured with", field=missing[0])
        if len(latent) < len(names):
            raise InputError(source, f"latent and jet features mixed: {list(names)}", "use one kind")
        return np.stack([_col(table, n) for n in names], axis=1).astype(np.float32)
    j = by_mass(table)
    calc = {
        "mj1": lambda: j["light_m"],
        "mj2": lambda: j["heavy_m"],
        "dmj": lambda: j["heavy_m"] - j["light_m"],
        "tau21_j1": lambda: j["light_tau2"] / (j["light_tau1"] + EPS),
        "tau21_j2": lambda: j["heavy_tau2"] / (j["heavy_tau1"] + EPS),
        "tau32_j1": lambda: j["light_tau3"] / (j["light_tau2"] + EPS),
        "tau32_j2": lambda: j["heavy_tau3"] / (j["heavy_tau2"] + EPS),
        "mjj": lambda: _col(table, "mjj"),
    }
    return np.stack([calc[n]() for n in names], axis=1).astype(np.float32) if names else np.empty((len(table), 0))


# Event columns a latent table carries beside the latent coordinates.
LATENT_KEEP = ("event_id", "process", "label", "mjj", "split")


def latent_columns(table: pa.Table) -> list[str]:
    return [c for c in table.column_names if LATENT.fullmatch(c)]


def attach_latent(table: pa.Table, latent: pa.Table, source="table") -> pa.Table:
    """The event columns of ``table`` with the latent coordinates of the same events (matched by event_id)."""
    ids = latent.column("event_id").to_numpy()
    want = table.column("event_id").to_numpy()
    order = np.argsort(ids, kind="stable")
    idx = order[np.minimum(np.searchsorted(ids, want, sorter=order), max(len(ids) - 1, 0))] if len(ids) else None
    if len(want) and (idx is None or not np.array_equal(ids[idx], want)):
        n = len(want) if idx is None else int(np.sum(ids[idx] != want))
        raise InputError(source, f"{n} events have no latent coordinates",
                         "encode the dataset the study sets were built from", field="event_id")
    cols = {k: table.column(k) for k in LATENT_KEEP if k in table.column_names}
    if len(want):
        taken = latent.take(pa.array(idx, pa.int64()))
        cols.update({n: taken.column(n) for n in latent_columns(latent)})
    else:
        cols.update({n: pa.array([], pa.float32()) for n in latent_columns(latent)})
    return pa.table(cols)
