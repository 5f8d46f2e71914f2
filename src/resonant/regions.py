"""Signal region, sidebands, signal injection, splits and the SR m_jj sampler.

One study set per (injection, seed) is built from the dataset's jet table:

- ``sb``: sideband data (background + injected signal), with a train/val ``split``;
- ``sr``: signal-region data (background share ``data`` + injected signal), split;
- ``sr_background``: extra true SR background for the idealised detector, split;
- ``sr_signal``: SR signal events neither injected nor in the test set (for the
  supervised reference), split;
- ``test``: SR signal and SR background that no model ever sees in training;
- ``sr_mjj``: m_jj values drawn from a KDE of the SR data, for sampling
  generative models in the SR.

Which background events are data, idealised background or test, and which
signal events are reserved for the test, is fixed by ``split_seed`` and is the
same for every seed and injection: the seed changes the injected signal events
and the train/val splits only. For one seed, a smaller injection is a subset of
a larger one. All sets are disjoint by ``event_id`` (:func:`check_disjoint`, run by
the study_sets stage before it writes anything).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .errors import ConfigError, InputError, PhysicsWarning

log = logging.getLogger(__name__)

STUDY_SETS = ("sb", "sr", "sr_background", "sr_signal", "test")
SPLIT_SETS = ("sb", "sr", "sr_background", "sr_signal")


@dataclass(frozen=True)
class Windows:
    """SR = [sr_lo, sr_hi); SB = [sb_lo, sr_lo) U [sr_hi, sb_hi). GeV."""

    sr: tuple[float, float]
    sb: tuple[float, float]

    def __post_init__(self):
        (a, b), (lo, hi) = self.sr, self.sb
        if not (lo < a < b < hi):
            raise ConfigError("regions", f"SR {list(self.sr)} must lie inside the SB range {list(self.sb)}",
                              "choose sb[0] < sr[0] < sr[1] < sb[1]")

    def in_sr(self, mjj) -> np.ndarray:
        mjj = np.asarray(mjj)
        return (mjj >= self.sr[0]) & (mjj < self.sr[1])

    def in_sb(self, mjj) -> np.ndarray:
        mjj = np.asarray(mjj)
        return ((mjj >= self.sb[0]) & (mjj < self.sr[0])) | ((mjj >= self.sr[1]) & (mjj < self.sb[1]))

    def in_range(self, mjj) -> np.ndarray:
        mjj = np.asarray(mjj)
        return (mjj >= self.sb[0]) & (mjj < self.sb[1])


@dataclass(frozen=True)
class StudySpec:
    background: tuple[str, ...]
    signal: str
    injection: int
    seed: int
    windows: Windows
    split_seed: int = 20201
    val_fraction: float = 0.2
    signal_test_fraction: float = 0.5
    sr_background: dict = field(default_factory=lambda: {"data": 0.5, "idealised": 0.25, "test": 0.25})
    kde_bandwidth: float = 10.0
    oversampling: float = 4.0


def select_split(table: pa.Table, name: str) -> pa.Table:
    """The rows of a study set in split ``name`` ("train" or "val")."""
    return table.filter(pc.equal(table.column("split"), name))


def validation_background(table: pa.Table) -> pa.Table:
    """The true-background events of a study set's validation split (a reference for generator checks)."""
    val = select_split(table, "val")
    return val.filter(pc.equal(val.column("label"), 0))


def _sorted_indices(mask: np.ndarray, event_id: np.ndarray) -> np.ndarray:
    idx = np.flatnonzero(mask)
    return idx[np.argsort(event_id[idx], kind="stable")]


def _split_column(n: int, val_fraction: float, rng: np.random.Generator) -> pa.Array:
    is_val = np.zeros(n, dtype=bool)
    n_val = int(round(val_fraction * n))
    is_val[rng.permutation(n)[:n_val]] = True
    return pa.array(np.where(is_val, "val", "train"), pa.string())


def sample_mjj(mjj_fit: np.ndarray, n: int, window: tuple[float, float], bandwidth: float,
               seed: int) -> np.ndarray:
    """Draw ``n`` m_jj values inside ``window`` from a gaussian KDE of ``mjj_fit``."""
    from sklearn.neighbors import KernelDensity

    if len(mjj_fit) == 0:
        raise ValueError("no m_jj values to fit the KDE")
    kde = KernelDensity(kernel="gaussian", bandwidth=bandwidth).fit(np.asarray(mjj_fit, np.float64)[:, None])
    rng = np.random.default_rng(seed)
    out = np.empty(0)
    while len(out) < n:  # keep draws inside the window (the kernel leaks over the edges)
        draw = kde.sample(max(2 * (n - len(out)), 16), random_state=int(rng.integers(2**31 - 1)))[:, 0]
        out = np.concatenate([out, draw[(draw >= window[0]) & (draw < window[1])]])
    return out[:n].astype(np.float32)


def build_study_sets(jets: pa.Table, spec: StudySpec, source="jets table") -> tuple[dict[str, pa.Table], dict]:
    """Partition ``jets`` into the study sets of ``spec``; returns (sets, summary)."""
    event_id = jets.column("event_id").to_numpy()
    process = np.asarray(jets.column("process").to_pylist(), dtype=object)
    label = jets.column("label").to_numpy()
    mjj = jets.column("mjj").to_numpy()
    w = spec.windows

    present = set(np.unique(process)) if len(process) else set()
    for p in (*spec.background, spec.signal):
        if p not in present:
            raise InputError(source, f"process '{p}' has no events after the selection "
                             f"(present: {', '.join(sorted(present)) or 'none'})",
                             "check the study's background/signal names and the generated sizes", field="process")

    is_bkg = np.isin(process, list(spec.background)) & (label == 0)
    is_sig = (process == spec.signal) & (label == 1)
    if not is_sig.any():
        raise InputError(source, f"process '{spec.signal}' has no events with label 1",
                         "the signal process must be generated with label 1", field="label")

    split_rng = np.random.default_rng(spec.split_seed)

    # Background: the SR events are shared out between data, idealised background and test.
    bkg_sr = _sorted_indices(is_bkg & w.in_sr(mjj), event_id)
    bkg_sb = _sorted_indices(is_bkg & w.in_sb(mjj), event_id)
    if len(bkg_sr) == 0:
        raise InputError(source, f"the signal region {list(w.sr)} GeV holds no background events",
                         "widen regions.sr, generate more events or check the selection", field="mjj")
    bkg_sr = split_rng.permutation(bkg_sr)
    fr = spec.sr_background
    n_data = int(fr["data"] * len(bkg_sr))
    n_ideal = int(fr["idealised"] * len(bkg_sr))
    n_test = int(fr["test"] * len(bkg_sr))
    bkg_sr_data = bkg_sr[:n_data]
    bkg_sr_ideal = bkg_sr[n_data:n_data + n_ideal]
    bkg_sr_test = bkg_sr[n_data + n_ideal:n_data + n_ideal + n_test]

    # Signal: a fixed share is reserved for the test set; injections come from the rest.
    sig = split_rng.permutation(_sorted_indices(is_sig & w.in_range(mjj), event_id))
    n_sig_test = int(round(spec.signal_test_fraction * len(sig)))
    sig_test = sig[:n_sig_test][w.in_sr(mjj[sig[:n_sig_test]])]
    pool = np.random.default_rng([spec.seed, 1]).permutation(sig[n_sig_test:])
    if spec.injection > len(pool):
        raise InputError(
            source,
            f"injection of {spec.injection} '{spec.signal}' events asked, but only {len(pool)} signal events "
            f"in [{w.sb[0]}, {w.sb[1]}) GeV are left after the selection and the test reserve",
            f"lower the injection or generate more '{spec.signal}' events", field="process",
        )
    injected = pool[:spec.injection]
    rest = pool[spec.injection:]
    inj_sr = injected[w.in_sr(mjj[injected])]
    inj_sb = injected[w.in_sb(mjj[injected])]
    sig_extra = rest[w.in_sr(mjj[rest])]
    if spec.injection > 0 and len(inj_sr) == 0:
        warnings.warn(f"{source}: none of the {spec.injection} injected '{spec.signal}' events is in the SR",
                      PhysicsWarning, stacklevel=2)
    if len(sig_test) == 0:
        raise InputError(source, f"no '{spec.signal}' events in the SR for the test set",
                         "generate more signal events or check the SR window", field="mjj")

    seed_rng = np.random.default_rng([spec.seed, 2])
    index = {
        "sb": np.sort(np.concatenate([bkg_sb, inj_sb])),
        "sr": np.sort(np.concatenate([bkg_sr_data, inj_sr])),
        "sr_background": np.sort(bkg_sr_ideal),
        "sr_signal": np.sort(sig_extra),
        "test": np.sort(np.concatenate([bkg_sr_test, sig_test])),
    }
    sets = {}
    for name in STUDY_SETS:
        t = jets.take(pa.array(index[name], pa.int64()))
        if name in SPLIT_SETS:
            t = t.append_column("split", _split_column(len(t), spec.val_fraction, seed_rng))
        sets[name] = t

    sr_train = sets["sr"].filter(pc.equal(sets["sr"].column("split"), "train"))
    n_mjj = int(np.ceil(spec.oversampling * len(sets["sr"])))
    sets["sr_mjj"] = pa.table({"mjj": sample_mjj(sr_train.column("mjj").to_numpy(), n_mjj, w.sr,
                                                 spec.kde_bandwidth, seed=int(seed_rng.integers(2**31 - 1)))})

    b_sr = len(bkg_sr_data)
    s_sr = len(inj_sr)
    summary = {
        "signal": spec.signal,
        "background": list(spec.background),
        "injection": spec.injection,
        "seed": spec.seed,
        "windows": {"sr": list(w.sr), "sb": list(w.sb)},
        "n_events": {name: len(t) for name, t in sets.items()},
        "signal_injected": {"total": int(spec.injection), "sr": int(s_sr), "sb": int(len(inj_sb))},
        "sr": {"background": b_sr, "signal": s_sr, "s_over_b": s_sr / b_sr if b_sr else None,
               "s_over_sqrt_b": s_sr / np.sqrt(b_sr) if b_sr else None},
        "test": {"background": int(len(bkg_sr_test)), "signal": int(len(sig_test))},
        "signal_available": int(len(pool)),
    }
    log.info("study set inj=%d seed=%d: SR %d bkg + %d sig (S/sqrt(B)=%.2f), SB %d, test %d+%d",
             spec.injection, spec.seed, b_sr, s_sr, summary["sr"]["s_over_sqrt_b"] or 0.0, len(sets["sb"]),
             len(bkg_sr_test), len(sig_test))
    return sets, summary


def overlaps(sets: dict[str, pa.Table]) -> dict[tuple[str, str], np.ndarray]:
    """The event_ids that two study sets share (or that one set holds twice: the pair (name, name)):
    {(set, set): sorted event_ids}, empty when the sets are disjoint."""
    names = [n for n in STUDY_SETS if n in sets]
    ids = {n: sets[n].column("event_id").to_numpy() for n in names}
    out = {}
    for i, a in enumerate(names):
        uniq, counts = np.unique(ids[a], return_counts=True)
        if (counts > 1).any():
            out[(a, a)] = uniq[counts > 1]
        for b in names[i + 1:]:
            both = np.intersect1d(ids[a], ids[b])
            if len(both):
                out[(a, b)] = both
    return out


def check_disjoint(sets: dict[str, pa.Table], source="study sets") -> None:
    """Raise an :class:`InputError` naming every pair of study sets that share events (and any set that holds
    an event twice), with their counts and first event_ids."""
    found = overlaps(sets)
    if found:
        what = "; ".join(f"{a} holds {len(e)} event_id(s) twice (e.g. {', '.join(map(str, e[:3]))})" if a == b else
                         f"{a} and {b} share {len(e)} event(s) (e.g. event_id {', '.join(map(str, e[:3]))})"
                         for (a, b), e in found.items())
        raise InputError(source, f"the study sets are not disjoint: {what}",
                         "event_id must be unique in the jets table (check its import or merge); the sets are "
                         "a partition of its rows", field="event_id")


def hash_split(event_id: np.ndarray, fractions: dict[str, float], salt: int = 0) -> np.ndarray:
    """Assign each event to one of ``fractions`` (e.g. train/val/test) by a hash of its event_id.

    Stable: an event keeps its part whatever else is in the table (adding a
    process or events changes no other assignment). Events beyond the sum of
    the fractions get "" (unused).
    """
    ids = np.asarray(event_id, dtype=np.uint64)
    with np.errstate(over="ignore"):
        h = (ids + np.uint64(salt)) * np.uint64(0x9E3779B97F4A7C15)
        h ^= h >> np.uint64(31)
        h *= np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(29)
    u = (h >> np.uint64(11)).astype(np.float64) / float(2**53)
    out = np.full(len(ids), "", dtype=object)
    lo = 0.0
    for name, frac in fractions.items():
        out[(u >= lo) & (u < lo + frac)] = name
        lo += frac
    return out
