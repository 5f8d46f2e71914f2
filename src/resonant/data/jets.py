"""Jet clustering, event selection and jet features (contract 2 of the design).

Anti-kt jets (R = 1.0 by default) are clustered with scikit-hep FastJet over
many events at once: one ``fastjet.ClusterSequence`` per chunk, the event loop
runs in C++. Everything else is vectorised numpy over flat arrays (particle,
jet and constituent indices with offsets), never a Python loop over events.

Selection, per event: the jets with |eta| < ``jet_eta_max``; the two leading of
them by pT are the event's jets (``j1`` the leading); the event needs two such
jets and ``j1`` pT > ``lead_pt_min`` (GeV).

Per jet: pt, eta (pseudorapidity), phi, m (>= 0: rounding-level negative m^2
is clipped), n (the true number of constituents), tau1, tau2, tau3 (beta = 1);
per event m_jj of the dijet four-vector; per jet the constituents as
(pT_rel = pT / jet pT, deta = eta - jet eta, dphi wrapped to [-pi, pi]) sorted
by pT descending and capped at ``max_constituents``.

N-subjettiness is fjcontrib's ``Nsubjettiness(N, KT_Axes(),
NormalizedMeasure(beta=1, R0=R))``::

    tau_N = sum_i pT_i min_k dR(i, axis_k) / (sum_i pT_i * R0)

with dR in (rapidity, phi) and the axes the exclusive kt jets of the jet's
constituents (kt, R = JetDefinition::max_allowable_R, E scheme,
``exclusive_jets_up_to(N)``; a jet with n <= N constituents has tau_N = 0).
One kt re-clustering per jet gives the 2- and 3-axis sets; the single axis is
the jet itself (kt-clustering all constituents to one jet is their E-scheme
sum). ``tests/test_jets.py`` checks it against fjcontrib itself (FastJet's
``njettiness`` binding) and against an independent brute-force numpy version.

Constituents of the selected jets. FastJet's ``constituent_index`` walks every
cluster sequence of the chunk several times (tens of microseconds per event),
so the constituents are first assigned geometrically -- each particle of a
selected event to the jet, among the two selected and the hardest other jets,
that minimises the anti-kt distance dR^2 / pT_jet^2 with dR < R -- and the
assignment is *verified*: the summed four-momentum of a jet's assigned
particles must equal FastJet's jet four-momentum to 1e-10 of the jet energy
(rounding is ~1e-14; one missing or extra particle of even 1 MeV breaks it by
> 1e-7). Events whose assignment fails the check (~5%: soft clusters merged
from beyond R, overlapping jets) are re-clustered and take FastJet's
constituent indices. The result is FastJet's constituent list, event by event
(``test_jets.py`` and ``test_physics_generated.py`` compare both paths, on
synthetic and on Pythia events).

Particles with pT = 0 (zero padding) are ignored.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field

import awkward as ak
import numpy as np
import pyarrow as pa

from .schema import CONSTITUENT_FIELDS, JET_FEATURES, JETS, JETS_SCHEMA, PARTICLE_FIELDS

log = logging.getLogger(__name__)

DEFAULT_RADIUS = 1.0
DEFAULT_MAX_CONSTITUENTS = 279
DEFAULT_JET_ETA_MAX = 2.5
DEFAULT_LEAD_PT_MIN = 1200.0
# Events clustered at once: bounds the memory of FastJet's cluster sequences (~110 kB per
# event). Throughput is flat from 250 to 3000 events per chunk (within the +-10% noise here).
DEFAULT_CHUNK_SIZE = 1000
N_TAUS = 3
# fastjet::JetDefinition::max_allowable_R: the kt re-clustering of fjcontrib's KT_Axes.
KT_AXES_R = 1000.0
# Relative tolerance of the four-momentum check of the geometric constituent assignment.
_P4_TOLERANCE = 1e-10
# Hardest jets besides the two selected ones that may own particles in the geometric assignment.
_N_OTHER_CANDIDATES = 1

# Keys of the workflow config's ``selection:`` block -> keyword arguments of this module.
CONFIG_KEYS = {"jet_radius": "radius", "max_constituents": "max_constituents",
               "jet_eta_max": "jet_eta_max", "lead_pt_min": "lead_pt_min"}


# ---------------------------------------------------------------------------
# kinematics (shared with the importers)


def four_vectors(pt, eta, phi, m=None):
    """Cartesian four-vectors (px, py, pz, E), float64, of (pt, eta, phi[, m]) arrays.

    ``m`` omitted means massless (E = pT cosh eta). Inputs broadcast like numpy.
    """
    pt = np.asarray(pt, dtype=np.float64)
    eta = np.asarray(eta, dtype=np.float64)
    phi = np.asarray(phi, dtype=np.float64)
    px = pt * np.cos(phi)
    py = pt * np.sin(phi)
    pz = pt * np.sinh(eta)
    if m is None:
        e = pt * np.cosh(eta)
    else:
        m = np.asarray(m, dtype=np.float64)
        e = np.sqrt(px * px + py * py + pz * pz + m * m)
    return px, py, pz, e


def invariant_mass(px, py, pz, e):
    """sqrt(E^2 - |p|^2); rounding-level negative m^2 is clipped to 0."""
    m2 = e * e - (px * px + py * py + pz * pz)
    return np.sqrt(np.maximum(m2, 0.0))


def kinematics(px, py, pz, e):
    """(pt, eta, phi, m) of Cartesian four-vectors; eta is the pseudorapidity, phi in [-pi, pi]."""
    px, py, pz, e = (np.asarray(x, dtype=np.float64) for x in (px, py, pz, e))
    pt = np.hypot(px, py)
    with np.errstate(divide="ignore", invalid="ignore"):
        eta = np.where(pt > 0, np.arcsinh(pz / pt), np.copysign(np.inf, pz))
    return pt, eta, np.arctan2(py, px), invariant_mass(px, py, pz, e)


def rapidity(pz, e):
    """Rapidity 0.5 ln((E + pz) / (E - pz)) (for E > |pz|)."""
    return 0.5 * np.log((e + pz) / (e - pz))


def dijet_four_vector(pt1, eta1, phi1, m1, pt2, eta2, phi2, m2):
    """(px, py, pz, E) of the sum of two jets given as (pt, eta, phi, m) arrays."""
    a = four_vectors(pt1, eta1, phi1, m1)
    b = four_vectors(pt2, eta2, phi2, m2)
    return tuple(x + y for x, y in zip(a, b))


def dijet_mass(pt1, eta1, phi1, m1, pt2, eta2, phi2, m2):
    """m_jj: the invariant mass of the four-vector sum of two jets given as (pt, eta, phi, m)."""
    return invariant_mass(*dijet_four_vector(pt1, eta1, phi1, m1, pt2, eta2, phi2, m2))


def wrap_phi(dphi):
    """Angles wrapped to [-pi, pi]."""
    return (np.asarray(dphi, dtype=np.float64) + np.pi) % (2.0 * np.pi) - np.pi


# ---------------------------------------------------------------------------
# flat-array helpers


def _offsets(counts) -> np.ndarray:
    counts = np.asarray(counts, dtype=np.int64)
    off = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=off[1:])
    return off


def _ranges(starts, lengths) -> np.ndarray:
    """Concatenation of ``arange(s, s + n)`` for each (s, n), vectorised."""
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    return np.repeat(np.asarray(starts, dtype=np.int64) - _offsets(lengths)[:-1], lengths) + np.arange(total)


def _segment_top(key: np.ndarray, offsets: np.ndarray, k: int) -> np.ndarray:
    """Indices (n_segments, k) of the ``k`` largest ``key`` values of each segment, descending; -1 if fewer.

    Ties go to the lower index. No sort: k passes of a segmented max.
    """
    n = len(offsets) - 1
    out = np.full((n, k), -1, dtype=np.int64)
    counts = np.diff(offsets)
    nonempty = np.flatnonzero(counts > 0)
    if len(nonempty) == 0:
        return out
    seg = np.repeat(np.arange(n), counts)
    work = np.array(key, dtype=np.float64)
    starts = offsets[:-1][nonempty]
    top = np.full(n, -np.inf)
    for r in range(k):
        top[nonempty] = np.maximum.reduceat(work, starts)
        hit = np.flatnonzero(work == top[seg])
        ev = seg[hit]
        first = np.ones(len(hit), dtype=bool)
        first[1:] = ev[1:] != ev[:-1]
        hit, ev = hit[first], ev[first]
        ok = counts[ev] > r
        out[ev[ok], r] = hit[ok]
        work[hit[ok]] = -np.inf
    return out


def _momentum_array(offsets, px, py, pz, e) -> ak.Array:
    """Jagged ``Momentum4D`` records, the input of FastJet's multi-event interface (no copies)."""
    return ak.Array(ak.contents.ListOffsetArray(
        ak.index.Index64(np.asarray(offsets, dtype=np.int64)),
        ak.contents.RecordArray(
            [ak.contents.NumpyArray(np.ascontiguousarray(x, dtype=np.float64)) for x in (px, py, pz, e)],
            ["px", "py", "pz", "E"], parameters={"__record__": "Momentum4D"})))


def _flat_jets(jets: ak.Array):
    """(offsets, px, py, pz, E) numpy arrays of FastJet's jagged jet output."""
    layout = jets.layout
    content = layout.content
    return (np.asarray(layout.offsets.data, dtype=np.int64),
            *(np.asarray(content[f].data, dtype=np.float64) for f in ("px", "py", "pz", "E")))


def jet_definition(algorithm: str, radius: float):
    """FastJet jet definition, E scheme: ``"antikt"`` (strategy Best) or ``"kt"`` (strategy N2Plain).

    Strategies change the speed, never the jets. For anti-kt R = 1, Best was as fast as the
    fastest fixed strategy at 260 particles and 20% faster than any at 560 (it picks per event);
    for the kt re-clustering of single jets with R = 1000 (50-150 constituents), N2Plain is
    25% faster than Best (tiles are useless at that R).
    """
    import fastjet

    alg = {"antikt": fastjet.antikt_algorithm, "kt": fastjet.kt_algorithm}[algorithm]
    strategy = fastjet.Best if algorithm == "antikt" else fastjet.N2Plain
    # The 5-argument constructor: with 4 positional arguments SWIG picks another overload.
    return fastjet.JetDefinition(alg, float(radius), fastjet.E_scheme, strategy, 1)


def _cluster_sequence(offsets, px, py, pz, e, jetdef):
    import fastjet

    return fastjet.ClusterSequence(_momentum_array(offsets, px, py, pz, e), jetdef)


# ---------------------------------------------------------------------------
# N-subjettiness


def nsubjettiness(offsets, pt, rap, phi, px, py, pz, e, radius=DEFAULT_RADIUS, n_max: int = N_TAUS,
                  jet_axis=None) -> np.ndarray:
    """tau_1 .. tau_{n_max} (beta = 1, kT axes, normalised measure with R0 = ``radius``) of many jets.

    The jets are given by their constituents: flat arrays of ``pt``, rapidity
    ``rap``, ``phi`` and four-vector ``px, py, pz, e``, with ``offsets`` (one
    more than the number of jets). ``jet_axis`` optionally gives each jet's
    (rapidity, phi) -- the E-scheme sum of its constituents -- else it is
    computed. Returns float64 (n_jets, n_max); 0 for a jet without
    constituents and for tau_N of a jet with n <= N constituents.
    """
    offsets = np.asarray(offsets, dtype=np.int64)
    n_jets = len(offsets) - 1
    counts = np.diff(offsets)
    taus = np.zeros((n_jets, n_max), dtype=np.float64)
    if n_jets == 0 or offsets[-1] == 0:
        return taus
    rap = np.asarray(rap, dtype=np.float64)
    phi = np.asarray(phi, dtype=np.float64)
    pt = np.asarray(pt, dtype=np.float64)
    filled = counts > 0
    jet_of = np.repeat(np.arange(n_jets), counts)
    if jet_axis is None:
        sums = [np.bincount(jet_of, weights=x, minlength=n_jets) for x in (px, py, pz, e)]
        axis_rap = np.zeros(n_jets)
        axis_rap[filled] = rapidity(sums[2][filled], sums[3][filled])
        axis_phi = np.arctan2(sums[1], sums[0])
    else:
        axis_rap, axis_phi = (np.asarray(x, dtype=np.float64) for x in jet_axis)
    # Work in phi relative to the jet axis: one wrap per constituent, none per axis below.
    rel = wrap_phi(phi - np.repeat(axis_phi, counts))

    # axes[n]: (rapidity, relative phi), shape (n_jets, n) of the n kT axes; an absent axis
    # (fewer constituents than n) repeats the first one, which leaves the minimum unchanged.
    axes = {1: (axis_rap[:, None], np.zeros((n_jets, 1)))}
    if n_max > 1:
        cs = _cluster_sequence(offsets, px, py, pz, e, jet_definition("kt", KT_AXES_R))
        with warnings.catch_warnings():
            # FastJet warns on every exclusive call whatever the algorithm (a bug in its check).
            warnings.filterwarnings("ignore", message=".*exclusive jets.*", category=UserWarning)
            found = {n: _flat_jets(cs.exclusive_jets_up_to(n)) for n in range(2, n_max + 1)}
        del cs
        for n, (aoff, apx, apy, apz, ae) in found.items():
            acount = np.diff(aoff)
            jet = np.repeat(np.arange(n_jets), acount)
            slot = np.arange(len(apx)) - aoff[:-1][jet]
            ay = np.empty((n_jets, n))
            ap = np.empty((n_jets, n))
            y = rapidity(apz, ae)
            p = wrap_phi(np.arctan2(apy, apx) - axis_phi[jet])
            first = aoff[:-1][filled]
            ay[filled] = y[first][:, None]
            ap[filled] = p[first][:, None]
            ay[~filled] = 0.0
            ap[~filled] = 0.0
            ay[jet, slot] = y
            ap[jet, slot] = p
            axes[n] = (ay, ap)

    denom = np.bincount(jet_of, weights=pt, minlength=n_jets) * float(radius)
    for n in range(1, n_max + 1):
        ay, ap = axes[n]
        dr2 = None
        for k in range(n):
            dy = rap - np.repeat(ay[:, k], counts)
            dp = rel - np.repeat(ap[:, k], counts)
            if np.abs(dp).max() > np.pi:  # only for jets wider than pi in phi: wrap exactly
                dp = wrap_phi(dp)
            d = dy * dy + dp * dp
            dr2 = d if dr2 is None else np.minimum(dr2, d)
        num = np.bincount(jet_of, weights=pt * np.sqrt(dr2), minlength=n_jets)
        ok = (denom > 0) & (counts > n)  # n <= N constituents: every one is an axis, tau_N = 0 exactly
        taus[ok, n - 1] = num[ok] / denom[ok]
    return taus


# ---------------------------------------------------------------------------
# clustering


@dataclass
class JetResult:
    """Jets of the selected events of a chunk.

    ``selected``: bool per input event. ``columns``: ``mjj`` and
    ``j{1,2}_{pt,eta,phi,m,n,tau1,tau2,tau3}`` (numpy, one entry per selected
    event, input order). ``constituents[j]``: ``(offsets, pt_rel, deta, dphi)``
    flat arrays of jet ``j``'s capped, pT-sorted constituents.
    ``stats``: counters of the chunk.
    """

    selected: np.ndarray
    columns: dict
    constituents: dict
    stats: dict = field(default_factory=dict)

    @property
    def n_selected(self) -> int:
        return int(self.selected.sum())

    def to_awkward(self) -> ak.Array:
        """One record per selected event: ``mjj``, ``j1``, ``j2`` (jet features + ``constituents``)."""
        out = {"mjj": self.columns["mjj"]}
        for j in JETS:
            off, *vals = self.constituents[j]
            const = ak.Array(ak.contents.ListOffsetArray(
                ak.index.Index64(off),
                ak.contents.RecordArray([ak.contents.NumpyArray(v) for v in vals], list(CONSTITUENT_FIELDS))))
            rec = {f: self.columns[f"{j}_{f}"] for f in JET_FEATURES}
            rec["constituents"] = const
            out[j] = ak.zip(rec, depth_limit=1)
        return ak.zip(out, depth_limit=1)


def _flat_particles(particles):
    """(offsets, pt, eta, phi) numpy arrays of an awkward array of particle lists."""
    particles = ak.Array(particles)
    counts = np.asarray(ak.to_numpy(ak.fill_none(ak.num(particles, axis=1), 0)), dtype=np.int64)
    flat = ak.flatten(particles, axis=1)
    cols = []
    for f in PARTICLE_FIELDS:
        v = flat[f]
        if v.layout.is_option or v.layout.is_indexed:
            v = ak.fill_none(v, 0.0)
        cols.append(np.asarray(ak.to_numpy(v), dtype=np.float64))
    return (_offsets(counts), *cols)


def flat_particles_from_arrow(column) -> tuple:
    """(offsets, pt, eta, phi) numpy arrays of a raw table's ``particles`` column (no awkward)."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if arr.null_count:
        arr = arr.fill_null([])
    offsets = np.asarray(arr.offsets, dtype=np.int64)
    values = arr.values
    cols = [np.asarray(values.field(f).to_numpy(zero_copy_only=False), dtype=np.float64)[offsets[0]:offsets[-1]]
            for f in PARTICLE_FIELDS]
    return (offsets - offsets[0], *cols)


def cluster(particles, radius=DEFAULT_RADIUS, max_constituents=DEFAULT_MAX_CONSTITUENTS,
            jet_eta_max=DEFAULT_JET_ETA_MAX, lead_pt_min=DEFAULT_LEAD_PT_MIN):
    """Cluster, select and compute the jet features of many events at once.

    ``particles``: awkward array of per-event lists of records with fields
    ``pt``, ``eta``, ``phi`` (massless; GeV, rad). Returns ``(jets, mask)``:
    ``mask`` a bool numpy array over the input events (selected or not) and
    ``jets`` an awkward array with one record per selected event: ``mjj`` and
    ``j1``, ``j2`` records of pt, eta, phi, m, n, tau1, tau2, tau3 and
    ``constituents`` (lists of pt_rel, deta, dphi records). Events with fewer
    than two particles or jets simply fail the selection.
    """
    res = cluster_flat(*_flat_particles(particles), radius=radius, max_constituents=max_constituents,
                       jet_eta_max=jet_eta_max, lead_pt_min=lead_pt_min)
    return res.to_awkward(), res.selected


def _empty_result(selected, stats) -> JetResult:
    columns = {"mjj": np.zeros(0)}
    constituents = {}
    for j in JETS:
        for f in JET_FEATURES:
            columns[f"{j}_{f}"] = np.zeros(0, np.int32 if f == "n" else np.float64)
        constituents[j] = (np.zeros(1, np.int64), *(np.zeros(0) for _ in CONSTITUENT_FIELDS))
    return JetResult(selected, columns, constituents, stats)


def _select(joff, jpx, jpy, jpz, jet_eta_max, lead_pt_min):
    """Indices of the two leading central jets per event (-1 if absent) and the selection mask."""
    jpt2 = jpx * jpx + jpy * jpy
    # |eta| < eta_max  <=>  |pz| < pT sinh(eta_max), without an arcsinh per jet
    central = (jpz * jpz < jpt2 * np.sinh(jet_eta_max) ** 2) & (jpt2 > 0)
    key = np.where(central, jpt2, -1.0)
    lead = _segment_top(key, joff, 2)
    padded = np.append(key, -1.0)  # index -1 (no jet) reads -1
    k1, k2 = padded[lead[:, 0]], padded[lead[:, 1]]
    selected = (k1 > max(float(lead_pt_min), 0.0) ** 2) & (k2 > 0)
    return lead, selected


def _fastjet_labels(offsets, px, py, pz, e, ev_sub, radius, jet_eta_max, lead_pt_min, label_of):
    """FastJet's constituents of the selected jets of the events ``ev_sub``, re-clustered.

    Returns (global particle index, label) of their constituents; ``label_of[k]``
    gives the label base (2 * selected-event index) of ``ev_sub[k]``.
    """
    cnt = np.diff(offsets)[ev_sub]
    sub_off = _offsets(cnt)
    parts = _ranges(offsets[ev_sub], cnt)
    cs = _cluster_sequence(sub_off, px[parts], py[parts], pz[parts], e[parts], jet_definition("antikt", radius))
    joff, jpx, jpy, jpz, _ = _flat_jets(cs.inclusive_jets())
    lead, selected = _select(joff, jpx, jpy, jpz, jet_eta_max, lead_pt_min)
    if not selected.all():  # pragma: no cover - FastJet is deterministic
        raise RuntimeError("re-clustering a subset of events changed their jets")
    lay = cs.constituent_index(0.0).layout
    jc_off = np.asarray(lay.content.offsets.data, dtype=np.int64)
    pidx = np.asarray(lay.content.content.data, dtype=np.int64)
    idx, lab = [], []
    for r in range(2):
        jet = lead[:, r]
        n = jc_off[jet + 1] - jc_off[jet]
        loc = pidx[_ranges(jc_off[jet], n)]
        idx.append(parts[loc + np.repeat(sub_off[:-1], n)])
        lab.append(np.repeat(label_of + r, n))
    return np.concatenate(idx), np.concatenate(lab)


def cluster_flat(offsets, pt, eta, phi, radius=DEFAULT_RADIUS, max_constituents=DEFAULT_MAX_CONSTITUENTS,
                 jet_eta_max=DEFAULT_JET_ETA_MAX, lead_pt_min=DEFAULT_LEAD_PT_MIN, timings: dict | None = None,
                 constituents_from: str = "auto") -> JetResult:
    """:func:`cluster` on flat particle arrays (``offsets``: n_events + 1 entries).

    ``constituents_from``: ``"auto"`` (geometric assignment, verified, FastJet
    where it fails; see the module docstring) or ``"fastjet"`` (FastJet's
    constituent indices for every event: slower, for tests). ``timings``, if
    given, accumulates CPU seconds per step.
    """
    if not radius > 0:
        raise ValueError(f"radius must be > 0, got {radius}")
    if int(max_constituents) < 1:
        raise ValueError(f"max_constituents must be >= 1, got {max_constituents}")
    if constituents_from not in ("auto", "fastjet"):
        raise ValueError(f"constituents_from must be 'auto' or 'fastjet', got {constituents_from!r}")
    clock = _Timer(timings)
    offsets = np.asarray(offsets, dtype=np.int64)
    pt, eta, phi = (np.asarray(x, dtype=np.float64) for x in (pt, eta, phi))
    n_events = len(offsets) - 1
    if len(offsets) < 1 or offsets[0] != 0 or offsets[-1] != len(pt) or np.any(np.diff(offsets) < 0):
        raise ValueError(f"offsets must rise from 0 to the number of particles ({len(pt)})")
    if not (len(pt) == len(eta) == len(phi)):
        raise ValueError("pt, eta and phi must have the same length")
    for name, x in (("pt", pt), ("eta", eta), ("phi", phi)):
        if not np.isfinite(x).all():
            raise ValueError(f"particle {name} has NaN or infinite values")
    if len(pt) and not (pt > 0).all():  # zero padding: not particles
        keep = pt > 0
        counts = np.bincount(np.repeat(np.arange(n_events), np.diff(offsets))[keep], minlength=n_events)
        offsets = _offsets(counts)
        pt, eta, phi = pt[keep], eta[keep], phi[keep]
    counts = np.diff(offsets)
    px, py, pz, e = four_vectors(pt, eta, phi)
    stats = {"n_in": n_events, "n_particles": int(len(pt))}
    clock("prepare")

    # 1. anti-kt over all events (C++ event loop)
    cs = _cluster_sequence(offsets, px, py, pz, e, jet_definition("antikt", radius))
    clock("antikt")
    joff, jpx, jpy, jpz, je = _flat_jets(cs.inclusive_jets())
    if constituents_from == "auto":
        del cs  # frees the cluster sequences early (~110 kB per event)
    clock("inclusive_jets")

    # 2. selection: the two leading central jets
    lead, selected = _select(joff, jpx, jpy, jpz, jet_eta_max, lead_pt_min)
    sel = np.flatnonzero(selected)
    n_sel = len(sel)
    stats["n_selected"] = n_sel
    clock("select")
    if n_sel == 0:
        return _empty_result(selected, stats)
    i1, i2 = lead[sel, 0], lead[sel, 1]
    jidx = np.stack([i1, i2], axis=1).ravel()  # jet 2s is j1 of selected event s, 2s + 1 its j2
    j_pt, j_eta, j_phi, j_m = kinematics(jpx[jidx], jpy[jidx], jpz[jidx], je[jidx])
    j_rap = rapidity(jpz[jidx], je[jidx])

    # 3. constituents: particle -> label (2s + r for jet r of selected event s)
    if constituents_from == "fastjet":
        lay = cs.constituent_index(0.0).layout
        del cs
        jc_off = np.asarray(lay.content.offsets.data, dtype=np.int64)
        pidx = np.asarray(lay.content.content.data, dtype=np.int64)
        nc = jc_off[jidx + 1] - jc_off[jidx]
        cidx = pidx[_ranges(jc_off[jidx], nc)] + np.repeat(np.repeat(offsets[sel], 2), nc)
        clab = np.repeat(np.arange(2 * n_sel), nc)
        stats["n_fallback"] = n_sel
    else:
        cidx, clab, n_fb = _assign_geometric(offsets, counts, pt, eta, phi, px, py, pz, e, sel, lead, joff,
                                             jpx, jpy, jpz, je, jidx, j_rap, j_phi, radius, jet_eta_max,
                                             lead_pt_min)
        stats["n_fallback"] = n_fb
    clock("constituents")

    # group by jet (counting sort: stable, so input order survives within a jet) and pT-sort
    nconst = np.bincount(clab, minlength=2 * n_sel)
    coff = _offsets(nconst)
    order = np.argsort(clab, kind="stable")
    cidx = cidx[order]
    cpt = pt[cidx]
    bound = np.zeros(len(cpt), dtype=bool)
    bound[coff[1:-1]] = True  # first constituent of each jet but the first
    if len(cpt) > 1 and not np.all((cpt[1:] <= cpt[:-1]) | bound[1:]):
        by_pt = ak.argsort(ak.unflatten(cpt, nconst), axis=1, ascending=False, stable=True)
        cidx = cidx[np.asarray(ak.flatten(by_pt), dtype=np.int64) + np.repeat(coff[:-1], nconst)]
        cpt = pt[cidx]
    clock("sort")

    # 4. substructure
    taus = nsubjettiness(coff, cpt, eta[cidx], phi[cidx], px[cidx], py[cidx], pz[cidx], e[cidx], radius=radius,
                         jet_axis=(j_rap, j_phi))
    clock("nsubjettiness")

    # 5. jet and event features
    columns = {"mjj": invariant_mass(jpx[i1] + jpx[i2], jpy[i1] + jpy[i2], jpz[i1] + jpz[i2], je[i1] + je[i2])}
    for r, j in enumerate(JETS):
        columns[f"{j}_pt"] = j_pt[r::2]
        columns[f"{j}_eta"] = j_eta[r::2]
        columns[f"{j}_phi"] = j_phi[r::2]
        columns[f"{j}_m"] = j_m[r::2]
        columns[f"{j}_n"] = nconst[r::2].astype(np.int32)
        for t in range(N_TAUS):
            columns[f"{j}_tau{t + 1}"] = taus[r::2, t]

    # 6. constituents relative to their jet, capped
    cap = np.minimum(nconst, int(max_constituents))
    constituents = {}
    for r, j in enumerate(JETS):
        jets_r = np.arange(r, 2 * n_sel, 2)
        take = _ranges(coff[jets_r], cap[jets_r])
        owner = np.repeat(jets_r, cap[jets_r])
        ci = cidx[take]
        constituents[j] = (_offsets(cap[jets_r]), pt[ci] / j_pt[owner], eta[ci] - j_eta[owner],
                           wrap_phi(phi[ci] - j_phi[owner]))
    clock("features")
    return JetResult(selected, columns, constituents, stats)


def _assign_geometric(offsets, counts, pt, eta, phi, px, py, pz, e, sel, lead, joff, jpx, jpy, jpz, je, jidx,
                      j_rap, j_phi, radius, jet_eta_max, lead_pt_min):
    """Constituents of the selected jets by the anti-kt distance to the hardest jets, verified.

    Returns (particle index, label, number of events that needed FastJet).
    """
    n_sel = len(sel)
    cnt = counts[sel]
    part = _ranges(offsets[sel], cnt)
    # candidate owners: the two selected jets, then the hardest other jets of the event
    jpt2 = jpx * jpx + jpy * jpy
    others = jpt2.copy()
    others[jidx] = -1.0
    other = _segment_top(others, joff, _N_OTHER_CANDIDATES)[sel]
    cand = np.concatenate([lead[sel], other], axis=1)
    r2 = float(radius) ** 2
    y = eta[part]
    ph = phi[part]
    best = np.full(len(part), np.inf)
    owner = np.full(len(part), -1, dtype=np.int64)  # column of ``cand``
    for k in range(cand.shape[1]):
        c = cand[:, k]
        cc = np.where(c >= 0, c, 0)
        valid = (c >= 0) & ((others[cc] > 0) if k >= 2 else True)  # an "other" jet that is one: none
        if k < 2:
            cy, cphi = j_rap[k::2], j_phi[k::2]
        else:
            cy = rapidity(jpz[cc], je[cc])
            cphi = np.arctan2(jpy[cc], jpx[cc])
        dy = y - np.repeat(cy, cnt)
        dp = np.abs(ph - np.repeat(cphi, cnt))
        dp = np.minimum(dp, 2.0 * np.pi - dp)
        dr2 = dy * dy + dp * dp
        valid &= jpt2[cc] > 0
        inv = np.where(valid, 1.0 / np.where(valid, jpt2[cc], 1.0), 0.0)  # anti-kt: dR^2 / pT^2
        metric = np.where((dr2 < r2) & np.repeat(valid, cnt), dr2 * np.repeat(inv, cnt), np.inf)
        better = metric < best
        best[better] = metric[better]
        owner[better] = k
    mine = (owner == 0) | (owner == 1)
    cidx = part[mine]
    ev = np.repeat(np.arange(n_sel), cnt)[mine]
    clab = 2 * ev + owner[mine]
    # verification: four-momentum sums against FastJet's jets
    bad = np.zeros(n_sel, dtype=bool)
    jets_e = je[jidx]
    for comp, ref in ((px, jpx), (py, jpy), (pz, jpz), (e, je)):
        s = np.bincount(clab, weights=comp[cidx], minlength=2 * n_sel)
        off = np.abs(s - ref[jidx]) > _P4_TOLERANCE * jets_e
        bad |= off[0::2] | off[1::2]
    n_bad = int(bad.sum())
    if n_bad:
        bad_ev = np.flatnonzero(bad)
        keep = ~bad[ev]
        fidx, flab = _fastjet_labels(offsets, px, py, pz, e, sel[bad_ev], radius, jet_eta_max, lead_pt_min,
                                     2 * bad_ev)
        cidx = np.concatenate([cidx[keep], fidx])
        clab = np.concatenate([clab[keep], flab])
        # keep the particle order within each jet (constituents are then pT-sorted by a stable sort)
        order = np.argsort(cidx, kind="stable")
        cidx, clab = cidx[order], clab[order]
    return cidx, clab, n_bad


class _Timer:
    def __init__(self, out: dict | None):
        self.out = out
        self.t = time.process_time() if out is not None else 0.0

    def __call__(self, name: str):
        if self.out is not None:
            now = time.process_time()
            self.out[name] = self.out.get(name, 0.0) + now - self.t
            self.t = now


# ---------------------------------------------------------------------------
# tables


def selection_kwargs(params: dict | None) -> dict:
    """Keyword arguments of :func:`jets_table` from a config ``selection`` block (unknown keys rejected)."""
    out = {}
    for key, value in (params or {}).items():
        if key in CONFIG_KEYS:
            out[CONFIG_KEYS[key]] = value
        elif key in CONFIG_KEYS.values() or key == "chunk_size":
            out[key] = value
        else:
            raise KeyError(key)
    return out


def _constituent_array(off, pt_rel, deta, dphi) -> pa.Array:
    values = pa.StructArray.from_arrays(
        [pa.array(np.asarray(v, dtype=np.float32)) for v in (pt_rel, deta, dphi)], names=list(CONSTITUENT_FIELDS))
    return pa.ListArray.from_arrays(pa.array(np.asarray(off, dtype=np.int32)), values)


def _result_table(res: JetResult, raw: pa.Table) -> pa.Table:
    idx = pa.array(np.flatnonzero(res.selected))
    cols = {"event_id": raw.column("event_id").take(idx), "process": raw.column("process").take(idx),
            "label": raw.column("label").take(idx)}
    for name, typ in ((f.name, f.type) for f in JETS_SCHEMA):
        if name in cols:
            continue
        if name.endswith("_constituents"):
            cols[name] = _constituent_array(*res.constituents[name[: -len("_constituents")]])
        else:
            cols[name] = pa.array(np.asarray(res.columns[name]).astype(typ.to_pandas_dtype()))
    return pa.table(cols, schema=JETS_SCHEMA)


def _counts_by_process(column) -> dict:
    vc = column.combine_chunks().value_counts() if isinstance(column, pa.ChunkedArray) else column.value_counts()
    return {str(v["values"]): int(v["counts"]) for v in vc.to_pylist()}


def jets_table(raw: pa.Table, radius=DEFAULT_RADIUS, max_constituents=DEFAULT_MAX_CONSTITUENTS,
               jet_eta_max=DEFAULT_JET_ETA_MAX, lead_pt_min=DEFAULT_LEAD_PT_MIN, chunk_size=DEFAULT_CHUNK_SIZE,
               progress: bool = True, name: str = "", timings: dict | None = None) -> tuple[pa.Table, dict]:
    """The jets table (``schema.JETS_SCHEMA``) of a raw-event table, and selection stats.

    Events are processed ``chunk_size`` at a time (memory ~ chunk_size x
    110 kB of FastJet cluster sequences), with one progress line per chunk
    on this module's logger (``timings``: CPU seconds per step, summed).
    ``event_id``, ``process`` and ``label`` of the selected events are kept,
    in input order. Stats: ``n_in``,
    ``n_selected``, per process (``n_in_by_process``,
    ``n_selected_by_process``), the selection values, CPU seconds and the
    number of events whose constituents came from FastJet's slower path.
    """
    if int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    chunk_size = int(chunk_size)
    n = raw.num_rows
    pieces = []
    n_sel = n_fb = 0
    cpu0 = time.process_time()
    wall0 = time.perf_counter()
    for start in range(0, n, chunk_size):
        part = raw.slice(start, chunk_size)
        t0 = time.perf_counter()
        res = cluster_flat(*flat_particles_from_arrow(part.column("particles")), radius=radius,
                           max_constituents=max_constituents, jet_eta_max=jet_eta_max, lead_pt_min=lead_pt_min,
                           timings=timings)
        pieces.append(_result_table(res, part))
        n_sel += res.n_selected
        n_fb += res.stats.get("n_fallback", 0)
        if progress:
            dt = time.perf_counter() - t0
            log.info("%sevents %d-%d of %d: %d/%d selected, %.0f events/s", f"[{name}] " if name else "",
                     start, start + part.num_rows - 1, n, res.n_selected, part.num_rows,
                     part.num_rows / max(dt, 1e-9))
    table = pa.concat_tables(pieces) if pieces else JETS_SCHEMA.empty_table()
    cpu = time.process_time() - cpu0
    stats = {
        "n_in": n,
        "n_selected": n_sel,
        "efficiency": n_sel / n if n else 0.0,
        "n_in_by_process": _counts_by_process(raw.column("process")) if n else {},
        "n_selected_by_process": _counts_by_process(table.column("process")) if n_sel else {},
        "selection": {"jet_radius": float(radius), "max_constituents": int(max_constituents),
                      "jet_eta_max": float(jet_eta_max), "lead_pt_min": float(lead_pt_min)},
        "n_constituents_from_fastjet": n_fb,
        "cpu_seconds": cpu,
        "wall_seconds": time.perf_counter() - wall0,
    }
    return table, stats
