"""LHC Olympics 2020 R&D import: particles -> raw events, features -> jets table."""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from lhco_fixtures import (
    FEATURE_COLUMNS,
    N_COLUMNS,
    expected_particles,
    make_features_frame,
    make_particle_events,
    undefined_padding,
    write_features_file,
    write_particle_file,
    write_particle_file_chunked,
)

from resonant.data import lhco
from resonant.data.schema import (
    JETS_FEATURES_ONLY_SCHEMA,
    RAW_SCHEMA,
    event_id_base,
    particles_from_table,
    validate_jets,
    validate_raw,
)
from resonant.errors import ConfigError, InputError, PhysicsWarning

ROOT = Path(__file__).resolve().parents[1]
N_EVENTS = 257  # prime: no chunk size below divides it


@pytest.fixture(scope="module")
def dense() -> np.ndarray:
    d = make_particle_events(N_EVENTS, seed=3, min_particles=0, max_particles=40)
    d[0, :] = 0.0  # an event without particles, label 0
    d[1, : 3 * 700] = np.tile([12.5, 0.3, -1.0], 700)  # all 700 slots used
    d[1, 3 * 700 - 3:3 * 700] = [1.0, -2.4, 3.1]
    d[2, 3 * 5] = 0.0  # a zero-pT slot inside the particle list is padding too
    d[2, 3 * 5 + 1:3 * 5 + 3] = 0.0
    return d


def _write(tmp_path: Path, dense: np.ndarray, name="events_anomalydetection_v2.h5", **kw) -> Path:
    path = tmp_path / name
    write_particle_file(path, dense, **kw)
    return path


def _assert_no_output(out: Path) -> None:
    assert not out.exists()
    leftovers = [p.name for p in out.parent.iterdir()] if out.parent.exists() else []
    assert leftovers == [], f"temporary files left behind: {leftovers}"


def _check_raw_against_dense(out: Path, dense: np.ndarray, id_tag="lhco", names=("qcd", "signal")) -> None:
    table = pq.read_table(out)
    assert table.schema.remove_metadata().equals(RAW_SCHEMA)
    validate_raw(table, out)
    n = len(dense)
    assert table.num_rows == n
    base = event_id_base(id_tag, 0)
    assert table.column("event_id").to_pylist() == [base + i for i in range(n)]
    labels = dense[:, -1].astype(int)
    assert table.column("label").to_pylist() == labels.tolist()
    assert table.column("process").to_pylist() == [names[x] for x in labels]
    col = table.column("particles").combine_chunks()
    offsets = col.offsets.to_numpy() - col.offsets[0].as_py()
    flat = col.flatten()
    got_all = np.stack([flat.field(f).to_numpy() for f in ("pt", "eta", "phi")], -1)
    expected = expected_particles(dense)
    for i in range(n):  # event by event, in the file's order
        got = got_all[offsets[i]:offsets[i + 1]]
        assert got.shape == expected[i].shape, f"event {i}"
        np.testing.assert_array_equal(got, expected[i], err_msg=f"event {i}")
    if n:  # the contract's own reader agrees
        np.testing.assert_array_equal(particles_from_table(table)[n - 1]["pt"].to_numpy(), expected[-1][:, 0])


# --------------------------------------------------------------------------- particles: conversion


@pytest.mark.parametrize(
    "layout",
    [
        {"complib": None},  # pandas' default to_hdf: uncompressed, read by h5py
        {"complib": "zlib"},  # shuffle + deflate, read by the threaded inflater
        {"complib": "blosc"},  # a filter only PyTables decodes
        {"format": "table"},  # pandas' table format
    ],
    ids=["fixed", "fixed-zlib", "fixed-blosc", "table"],
)
def test_particles_event_by_event(tmp_path, dense, layout):
    src = _write(tmp_path, dense, **layout)
    out = tmp_path / "out" / "raw.parquet"
    stats = lhco.import_particles(src, out, chunk_size=50)
    _check_raw_against_dense(out, dense)
    pf = pq.ParquetFile(out)
    assert pf.metadata.num_row_groups == math.ceil(N_EVENTS / 50)
    assert [pf.metadata.row_group(i).num_rows for i in range(pf.metadata.num_row_groups)] == [50] * 5 + [7]
    counts = [len(p) for p in expected_particles(dense)]
    assert stats["n_events"] == N_EVENTS
    assert stats["n_particles"] == sum(counts)
    assert stats["n_signal"] == int(dense[:, -1].sum())
    assert stats["n_background"] == N_EVENTS - stats["n_signal"]
    assert stats["multiplicity"] == {"min": 0, "max": 700, "mean": sum(counts) / N_EVENTS}
    assert stats["n_events_without_particles"] >= 1 and stats["n_events_with_700_particles"] == 1
    assert [e.name for e in (tmp_path / "out").iterdir()] == ["raw.parquet"]
    assert lhco.inspect_particle_file(src)["reader"] == stats["reader"]


@pytest.mark.parametrize("chunk_size", [1, 6, 100, 256, 257, 10_000])
def test_chunk_boundaries(tmp_path, dense, chunk_size):
    """Chunks smaller than, not dividing and larger than N; HDF5 chunks of 7 rows straddle them."""
    src = _write(tmp_path, dense, complib="zlib")
    with h5py.File(src) as f:
        assert f["df/block0_values"].chunks[0] not in (1, chunk_size)
    out = tmp_path / "raw.parquet"
    lhco.import_particles(src, out, chunk_size=chunk_size, threads=2)
    _check_raw_against_dense(out, dense)
    assert pq.ParquetFile(out).metadata.num_row_groups == math.ceil(N_EVENTS / chunk_size)


@pytest.mark.parametrize("chunk_size", [50, 64, 300])
def test_row_groups_larger_than_dense_blocks(tmp_path, dense, monkeypatch, chunk_size):
    """Memory is bounded by DENSE_BLOCK_ROWS; chunk_size only sets the row groups."""
    monkeypatch.setattr(lhco, "DENSE_BLOCK_ROWS", 16)
    src = _write(tmp_path, dense, complib="zlib")
    reads = []
    original = lhco._InflateReader.read

    def spy(self, start, stop, out=None):
        reads.append(stop - start)
        return original(self, start, stop, out)

    monkeypatch.setattr(lhco._InflateReader, "read", spy)
    out = tmp_path / "raw.parquet"
    lhco.import_particles(src, out, chunk_size=chunk_size)
    _check_raw_against_dense(out, dense)
    meta = pq.ParquetFile(out).metadata
    sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    assert sizes == [min(chunk_size, N_EVENTS - s) for s in range(0, N_EVENTS, chunk_size)]
    assert max(reads[2:]) == 16  # after inspect's two reads


def test_streams_in_chunks_never_whole_file(tmp_path, dense, monkeypatch, caplog):
    src = _write(tmp_path, dense)
    calls = []
    original = lhco._H5pyReader.read

    def spy(self, start, stop, out=None):
        calls.append((start, stop))
        return original(self, start, stop, out)

    monkeypatch.setattr(lhco._H5pyReader, "read", spy)
    with caplog.at_level(logging.INFO, logger="resonant.data.lhco"):
        lhco.import_particles(src, tmp_path / "raw.parquet", chunk_size=40)
    assert calls and max(stop - start for start, stop in calls) <= 40 + lhco.LABEL_SAMPLE_ROWS
    import_reads = [c for c in calls if c[1] - c[0] <= 40]
    assert sorted(import_reads) == [(s, min(s + 40, N_EVENTS)) for s in range(0, N_EVENTS, 40)]
    progress = [r for r in caplog.records if re.search(r": chunk \d+/\d+ rows", r.getMessage())]
    assert len(progress) == math.ceil(N_EVENTS / 40)


def test_max_events_names_and_tag(tmp_path, dense):
    src = _write(tmp_path, dense)
    out = tmp_path / "raw.parquet"
    stats = lhco.import_particles(src, out, chunk_size=30, max_events=100, id_tag="rnd",
                                  process_names={0: "background", 1: "wprime"})
    assert stats["n_events"] == 100 and stats["n_events_in_file"] == N_EVENTS
    _check_raw_against_dense(out, dense[:100], id_tag="rnd", names=("background", "wprime"))
    meta = pq.read_schema(out).metadata
    assert b"resonant" in meta


def test_float32_file(tmp_path, dense):
    src = _write(tmp_path, dense.astype(np.float32), complib="zlib")
    out = tmp_path / "raw.parquet"
    lhco.import_particles(src, out, chunk_size=64)
    _check_raw_against_dense(out, dense.astype(np.float32))


def test_inspect(tmp_path, dense):
    src = _write(tmp_path, dense, complib="zlib")
    info = lhco.inspect_particle_file(src)
    assert info["n_events"] == N_EVENTS and info["n_columns"] == N_COLUMNS and info["n_particles"] == 700
    assert info["layout"] == "fixed" and info["filters"] == ["shuffle", "deflate"]
    assert info["reader"] == "inflate-threads"
    assert info["labels_checked_rows"] == N_EVENTS


def test_chunked_writer_matches_pandas(tmp_path, dense):
    """The benchmark's chunked writer produces exactly pandas' to_hdf layout."""

    def describe(path):
        with h5py.File(path) as f:
            g = f["df"]
            nodes = {k: (g[k].shape, g[k].dtype.str, g[k].chunks, g[k].compression, g[k].shuffle,
                         {a: str(v) for a, v in g[k].attrs.items()}) for k in g}
            return nodes, {a: str(v) for a, v in g.attrs.items()}

    for complib in (None, "zlib"):
        a, b = tmp_path / f"pandas_{complib}.h5", tmp_path / f"chunked_{complib}.h5"
        write_particle_file(a, dense, complib=complib)
        write_particle_file_chunked(b, len(dense), lambda s, e: dense[s:e], chunk_rows=100, complib=complib)
        assert describe(a) == describe(b)
        np.testing.assert_array_equal(pd.read_hdf(b, key="df").to_numpy(), dense)


# --------------------------------------------------------------------------- particles: bad input


def _bad(tmp_path, src, match, **kw):
    out = tmp_path / "out" / "raw.parquet"
    with pytest.raises(InputError, match=match) as err:
        lhco.import_particles(src, out, **kw)
    assert Path(src).name in str(err.value)
    _assert_no_output(out)
    return err.value


def test_missing_file(tmp_path):
    e = _bad(tmp_path, tmp_path / "events_anomalydetection_v2.h5", "does not exist")
    assert "download" in e.fix


def test_empty_file(tmp_path):
    src = tmp_path / "events_anomalydetection_v2.h5"
    src.write_bytes(b"")
    _bad(tmp_path, src, "empty")


@pytest.mark.parametrize("complib", [None, "zlib"])
@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_truncated_file(tmp_path, dense, complib, keep):
    src = _write(tmp_path, dense, complib=complib)
    size = src.stat().st_size
    with open(src, "r+b") as fh:
        fh.truncate(int(size * keep))
    e = _bad(tmp_path, src, "truncated|corrupt|cannot")
    assert e.fix and "download" in e.fix
    with pytest.raises(InputError, match="truncated|corrupt|cannot"):
        lhco.inspect_particle_file(src)


def test_not_hdf5(tmp_path):
    src = tmp_path / "events_anomalydetection_v2.h5"
    src.write_text("pT,eta,phi\n1,2,3\n")
    _bad(tmp_path, src, "not an HDF5 file")


@pytest.mark.parametrize("fmt", ["fixed", "table"])
def test_particle_file_under_another_key(tmp_path, dense, fmt):
    """Without the key setting the import fails, before writing, naming the setting, the keys and the fix;
    with it the file imports."""
    src = _write(tmp_path, dense, key="events", format=fmt)
    e = _bad(tmp_path, src, "no key 'df'")
    assert "dataset.lhco.key" in e.problem and "keys in the file: 'events'" in e.problem
    assert "set dataset.lhco.key: events in the config" in e.fix
    assert e.field == "df"
    with pytest.raises(InputError, match="set dataset.lhco.key: events"):
        lhco.inspect_particle_file(src)
    out = tmp_path / "raw.parquet"
    stats = lhco.import_particles(src, out, chunk_size=100, key="events")
    _check_raw_against_dense(out, dense)
    assert stats["n_events"] == N_EVENTS
    assert json.loads(pq.read_schema(out).metadata[b"resonant"])["key"] == "events"
    assert lhco.inspect_particle_file(src, key="events")["key"] == "events"
    # a key set but absent: the message names the file's keys and the key to set
    e = _bad(tmp_path, _write(tmp_path, dense), "no key 'particles'", key="particles")
    assert "keys in the file: 'df'" in e.problem and "set dataset.lhco.key: df" in e.fix


def test_hdf5_without_a_particle_dataframe(tmp_path):
    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as f:
        f["particles"] = np.zeros((3, 3))
    e = _bad(tmp_path, plain, "no key 'df'.*keys in the file: 'particles'.*this is not events_anomalydetection_v2.h5")
    assert "dataset.lhco.key: <key>" in e.fix


def test_features_file_passed_as_particles(tmp_path):
    src = tmp_path / "events_anomalydetection_v2.features.h5"
    write_features_file(src, make_features_frame(20).astype(float), key="features")
    e = _bad(tmp_path, src, "no key 'df'")
    assert "import_features" in e.fix and "dataset.lhco.features" in e.fix


@pytest.mark.parametrize("ncol", [2100, 2102])
def test_wrong_column_count(tmp_path, dense, ncol):
    d = dense[:, :ncol] if ncol < N_COLUMNS else np.concatenate([dense, dense[:, -1:]], axis=1)
    src = _write(tmp_path, d)
    e = _bad(tmp_path, src, f"expected 2101 columns \\(700 x pT, eta, phi \\+ label\\), found {ncol}")
    assert e.field == "df/block0_values"


def test_mixed_dtype_blocks(tmp_path, dense):
    df = pd.DataFrame(dense)
    df[N_COLUMNS - 1] = df[N_COLUMNS - 1].astype(np.int64)  # pandas then stores two blocks
    src = tmp_path / "events_anomalydetection_v2.h5"
    df.to_hdf(src, key="df")
    _bad(tmp_path, src, "2 blocks")


@pytest.mark.parametrize("padding", ["zero", "nan"])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("column,field", [(3 * 4 + 0, "pt"), (3 * 4 + 1, "eta"), (3 * 4 + 2, "phi")])
def test_non_finite_values(tmp_path, dense, value, column, field, padding):
    """NaN/inf in a particle with pT > 0 (or in pT) is an error, also in a file whose padding holds NaN."""
    d = dense.copy() if padding == "zero" else undefined_padding(dense)
    assert d[203, 3 * 4] > 0
    d[203, column] = value  # in the 5th chunk of 50: earlier chunks were already written
    src = _write(tmp_path, d, complib="zlib")
    e = _bad(tmp_path, src, "rows 200-249: 1 NaN or infinite value", chunk_size=50)
    assert "event 203 (row 203)" in str(e) and f"particle 4 {field}" in e.field
    assert "repair or drop" in e.fix and "pT = 0" in e.fix
    if field != "pt":
        assert f"with pT = {d[203, 3 * 4]} > 0" in e.problem


@pytest.mark.parametrize("layout", [{"complib": None}, {"complib": "zlib"}, {"format": "table"}],
                         ids=["fixed", "fixed-zlib", "table"])
@pytest.mark.parametrize("eta,phi", [(np.nan, 0.0), (np.nan, np.nan), (np.inf, -np.inf)])
def test_padding_with_undefined_eta_is_padding(tmp_path, dense, layout, eta, phi):
    """A pT = 0 slot is padding whatever its eta and phi (a generator writes eta = NaN there)."""
    d = undefined_padding(dense, eta=eta, phi=phi)
    n_padding = int((d[:, : 3 * 700 : 3] == 0).sum())
    assert n_padding > 0 and not np.isfinite(d).all()
    src = _write(tmp_path, d, **layout)
    out = tmp_path / "out" / "raw.parquet"
    stats = lhco.import_particles(src, out, chunk_size=50)
    _check_raw_against_dense(out, dense)  # the same events as the file with zero padding
    assert stats["n_padding_slots_non_finite"] == n_padding
    assert stats["n_particles"] == int((dense[:, : 3 * 700 : 3] > 0).sum())
    assert lhco.inspect_particle_file(src)["n_events"] == N_EVENTS
    clean = lhco.import_particles(_write(tmp_path, dense, name="clean.h5"), tmp_path / "clean.parquet")
    assert clean["n_padding_slots_non_finite"] == 0


def test_non_finite_label(tmp_path, dense):
    d = dense.copy()
    d[120, -1] = np.nan
    e = _bad(tmp_path, _write(tmp_path, d), "row 120 has nan", chunk_size=50)
    assert "label" in e.field


@pytest.mark.parametrize("row", [5, 130])  # inside the rows inspect checks, and beyond them
def test_bad_label(tmp_path, dense, row, monkeypatch):
    monkeypatch.setattr(lhco, "LABEL_SAMPLE_ROWS", 20)
    d = dense.copy()
    d[row, -1] = 2.0
    e = _bad(tmp_path, _write(tmp_path, d), f"row {row} has 2.0", chunk_size=50)
    assert "label" in e.field


def test_negative_pt(tmp_path, dense):
    d = dense.copy()
    d[77, 0] = -3.0
    _bad(tmp_path, _write(tmp_path, d), "row 77: particle 0 has negative pT")


def test_no_events(tmp_path):
    _bad(tmp_path, _write(tmp_path, np.zeros((0, N_COLUMNS))), "no events")


def test_bad_arguments(tmp_path, dense):
    src = _write(tmp_path, dense)
    with pytest.raises(ValueError, match="chunk_size"):
        lhco.import_particles(src, tmp_path / "o.parquet", chunk_size=0)
    with pytest.raises(ValueError, match="process_names"):
        lhco.import_particles(src, tmp_path / "o.parquet", process_names={0: "qcd"})
    assert not (tmp_path / "o.parquet").exists()


# --------------------------------------------------------------------------- features


def _reference_features(df: pd.DataFrame, lead_pt_min=1200.0, eta_max=2.5):
    """Independent computation with the ``vector`` package."""
    import vector

    j = [vector.array({"px": df[f"pxj{k}"].to_numpy(), "py": df[f"pyj{k}"].to_numpy(),
                       "pz": df[f"pzj{k}"].to_numpy(), "M": df[f"mj{k}"].to_numpy()}) for k in (1, 2)]
    mjj = (j[0] + j[1]).M
    first_leads = j[0].pt >= j[1].pt
    lead = {"pt": np.where(first_leads, j[0].pt, j[1].pt), "eta": np.where(first_leads, j[0].eta, j[1].eta),
            "phi": np.where(first_leads, j[0].phi, j[1].phi),
            "m": np.where(first_leads, df["mj1"], df["mj2"]),
            "tau2": np.where(first_leads, df["tau2j1"], df["tau2j2"])}
    sub = {"pt": np.where(first_leads, j[1].pt, j[0].pt), "eta": np.where(first_leads, j[1].eta, j[0].eta),
           "phi": np.where(first_leads, j[1].phi, j[0].phi),
           "m": np.where(first_leads, df["mj2"], df["mj1"]),
           "tau2": np.where(first_leads, df["tau2j2"], df["tau2j1"])}
    sel = (lead["pt"] > lead_pt_min) & (np.abs(lead["eta"]) < eta_max) & (np.abs(sub["eta"]) < eta_max)
    return lead, sub, mjj, sel


@pytest.mark.parametrize("fmt,label_dtype", [("fixed", np.float64), ("fixed", np.int64), ("table", np.float64)])
def test_features_physics(tmp_path, fmt, label_dtype):
    df = make_features_frame(3000, seed=11, label_dtype=label_dtype)
    src = tmp_path / "events_anomalydetection_v2.features.h5"
    write_features_file(src, df, format=fmt)
    out = tmp_path / "out" / "jets.parquet"
    stats = lhco.import_features(src, out, chunk_rows=700)
    table = pq.read_table(out)
    assert table.schema.remove_metadata().equals(JETS_FEATURES_ONLY_SCHEMA)
    validate_jets(table, out)
    lead, sub, mjj, sel = _reference_features(df)
    rows = np.flatnonzero(sel)
    assert 0 < len(rows) < len(df)
    assert stats["n_events_read"] == 3000 and stats["n_events_selected"] == len(rows)
    assert stats["n_jets_reordered"] == int((df.eval("pxj2**2 + pyj2**2") > df.eval("pxj1**2 + pyj1**2")).sum())
    got = table.to_pydict()
    assert got["event_id"] == [event_id_base("lhco", 0) + int(i) for i in rows]
    labels = df["label"].to_numpy().astype(int)[rows]
    assert got["label"] == labels.tolist()
    assert got["process"] == [("qcd", "signal")[x] for x in labels]
    assert stats["n_signal"] == int(labels.sum())
    for name, jet in (("j1", lead), ("j2", sub)):
        for f in ("pt", "eta", "phi", "m", "tau2"):
            np.testing.assert_allclose(got[f"{name}_{f}"], jet[f][rows], rtol=2e-6, atol=1e-5, err_msg=f"{name}_{f}")
        assert got[f"{name}_n"] == [None] * len(rows)
    np.testing.assert_allclose(got["mjj"], mjj[rows], rtol=2e-6)
    assert np.all(np.array(got["j1_pt"]) >= np.array(got["j2_pt"]))
    np.testing.assert_array_equal(got["j1_tau1"], df["tau1j1"].where(
        df.eval("pxj1**2 + pyj1**2") >= df.eval("pxj2**2 + pyj2**2"), df["tau1j2"]).to_numpy()[rows].astype(np.float32))


def test_features_selection_parameters(tmp_path):
    df = make_features_frame(2000, seed=5)
    src = tmp_path / "f.h5"
    write_features_file(src, df)
    stats = lhco.import_features(src, tmp_path / "j.parquet", lead_pt_min=2000.0, jet_eta_max=1.0)
    *_, sel = _reference_features(df, 2000.0, 1.0)
    assert stats["n_events_selected"] == int(sel.sum()) > 0


def test_extra_qcd_file_without_label(tmp_path):
    df = make_features_frame(500, seed=2, with_label=False)
    src = tmp_path / "events_anomalydetection_qcd_extra_inneronly_features.h5"
    write_features_file(src, df)
    stats = lhco.import_features(src, tmp_path / "extra.parquet", id_tag="lhco-extra")
    table = pq.read_table(tmp_path / "extra.parquet")
    assert set(table.column("label").to_pylist()) == {0}
    assert set(table.column("process").to_pylist()) == {"qcd"}
    assert stats["label_column"] is False and stats["n_signal"] == 0
    assert min(table.column("event_id").to_pylist()) >= event_id_base("lhco-extra", 0)


def test_particle_and_feature_imports_share_ids(tmp_path, dense):
    n = len(dense)
    fdf = make_features_frame(n, seed=4)
    fdf["label"] = dense[:, -1]
    fsrc = tmp_path / "events_anomalydetection_v2.features.h5"
    write_features_file(fsrc, fdf)
    lhco.import_features(fsrc, tmp_path / "jets.parquet", chunk_rows=100)
    lhco.import_particles(_write(tmp_path, dense), tmp_path / "raw.parquet", chunk_size=100)
    jets = pq.read_table(tmp_path / "jets.parquet").to_pydict()
    raw = pq.read_table(tmp_path / "raw.parquet", columns=["event_id", "label"]).to_pydict()
    by_id = dict(zip(raw["event_id"], raw["label"]))
    assert jets["event_id"] and all(by_id[i] == lab for i, lab in zip(jets["event_id"], jets["label"]))


def test_extra_background_appended(tmp_path):
    main, extra = make_features_frame(400, seed=1), make_features_frame(300, seed=2, with_label=False)
    fsrc, esrc = tmp_path / "events_anomalydetection_v2.features.h5", tmp_path / "extra.h5"
    write_features_file(fsrc, main)
    write_features_file(esrc, extra, format="table")
    out = tmp_path / "jets.parquet"
    stats = lhco.import_features(fsrc, out, extra_background=esrc, chunk_rows=128)
    t = pq.read_table(out).to_pydict()
    *_, sel_main = _reference_features(main)
    *_, sel_extra = _reference_features(extra)
    ids = [event_id_base("lhco", 0) + int(i) for i in np.flatnonzero(sel_main)]
    ids += [event_id_base("lhco-extra-qcd", 0) + int(i) for i in np.flatnonzero(sel_extra)]
    assert t["event_id"] == ids and len(set(ids)) == len(ids)
    n_main = int(sel_main.sum())
    assert set(t["process"][n_main:]) == {"qcd_extra"} and set(t["label"][n_main:]) == {0}
    assert stats["n_events_selected"] == n_main
    assert stats["extra_background"]["n_events_selected"] == int(sel_extra.sum())
    lhco.import_features(fsrc, out, extra_background=esrc, extra_process="qcd")
    assert set(pq.read_table(out).column("process").to_pylist()) == {"qcd", "signal"}


def test_extra_background_validated_before_writing(tmp_path):
    fsrc, esrc = tmp_path / "events_anomalydetection_v2.features.h5", tmp_path / "extra.h5"
    write_features_file(fsrc, make_features_frame(100))
    write_features_file(esrc, make_features_frame(100).drop(columns=["mj1"]))
    out = tmp_path / "out" / "jets.parquet"
    with pytest.raises(InputError, match="'mj1' missing") as err:
        lhco.import_features(fsrc, out, extra_background=esrc)
    assert "extra.h5" in str(err.value)
    _assert_no_output(out)


def _bad_features(tmp_path, src, match, **kw):
    out = tmp_path / "out" / "jets.parquet"
    with pytest.raises(InputError, match=match) as err:
        lhco.import_features(src, out, **kw)
    assert Path(src).name in str(err.value)
    _assert_no_output(out)
    return err.value


@pytest.mark.parametrize("column", ["pxj1", "tau3j2", "mj2"])
def test_features_missing_column(tmp_path, column):
    src = tmp_path / "events_anomalydetection_v2.features.h5"
    write_features_file(src, make_features_frame(50).drop(columns=[column]))
    e = _bad_features(tmp_path, src, f"'{column}' missing")
    assert e.field == column


def test_features_no_event_selected(tmp_path):
    src = tmp_path / "events_anomalydetection_v2.features.h5"
    write_features_file(src, make_features_frame(400, seed=1))
    _bad_features(tmp_path, src, "no event of 400 passes the selection", lead_pt_min=1e5, chunk_rows=100)


def test_features_non_finite(tmp_path):
    df = make_features_frame(300, seed=1)
    df.loc[250, "pzj2"] = np.inf
    src = tmp_path / "events_anomalydetection_v2.features.h5"
    write_features_file(src, df)
    e = _bad_features(tmp_path, src, "first at row 250", chunk_rows=100)
    assert e.field == "pzj2"


@pytest.mark.parametrize("case", ["missing", "not-hdf5", "truncated", "no-pandas-object", "wrong-key"])
def test_features_bad_files(tmp_path, case):
    src = tmp_path / "events_anomalydetection_v2.features.h5"
    kw = {}
    if case == "not-hdf5":
        src.write_text("not hdf5")
    elif case == "truncated":
        write_features_file(src, make_features_frame(5000))
        with open(src, "r+b") as fh:
            fh.truncate(src.stat().st_size // 2)
    elif case == "no-pandas-object":
        with h5py.File(src, "w") as f:
            f["x"] = np.zeros(3)
    elif case == "wrong-key":
        write_features_file(src, make_features_frame(50))
        kw["key"] = "features"
    _bad_features(tmp_path, src, "does not exist|not an HDF5|truncated|no pandas object|no key|cannot", **kw)


def test_features_signal_lost_warns(tmp_path):
    df = make_features_frame(300, seed=8)
    df.loc[df["label"] == 1, ["pzj1", "pzj2"]] = 1e5  # |eta| ~ 5: every signal event fails
    src = tmp_path / "f.h5"
    write_features_file(src, df)
    with pytest.warns(PhysicsWarning, match="none passes the selection"):
        lhco.import_features(src, tmp_path / "j.parquet")


# --------------------------------------------------------------------------- CLI


SCRIPT = ROOT / "workflow" / "scripts" / "import_lhco.py"


@pytest.fixture(scope="module")
def cli():
    spec = importlib.util.spec_from_file_location("import_lhco_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


WORKFLOW_PARAMS = {"chunk_size": 100, "key": "df", "process_names": {"0": "qcd", "1": "wprime_lhco"},
                   "jet_radius": 1.0, "lead_pt_min": 1000.0, "jet_eta_max": 2.5,
                   "max_constituents": 64}  # as rules/common.smk lhco_params()


def test_cli_standalone():
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    res = subprocess.run([sys.executable, str(SCRIPT), "particles", "--help"], capture_output=True, text=True, env=env)
    assert res.returncode == 0 and "--chunk-size" in res.stdout
    res = subprocess.run([sys.executable, str(SCRIPT), "particles", "--input", "/nonexistent/nope.h5",
                          "--output", "/nonexistent/x.parquet"], capture_output=True, text=True, env=env)
    assert res.returncode == 2 and "nope.h5" in res.stderr and "does not exist" in res.stderr


def test_cli(tmp_path, dense, cli, capsys):
    for sub in ([], ["inspect"], ["particles"], ["features"]):
        with pytest.raises(SystemExit) as ex:
            cli([*sub, "--help"])
        assert ex.value.code == 0
    src = _write(tmp_path, dense, complib="zlib")
    # the workflow's call (rules/data.smk)
    cli(["particles", "--input", str(src), "--params", json.dumps(WORKFLOW_PARAMS),
         "--output", str(tmp_path / "raw.parquet"), "--stats", str(tmp_path / "stats.json")])
    _check_raw_against_dense(tmp_path / "raw.parquet", dense, names=("qcd", "wprime_lhco"))
    assert pq.ParquetFile(tmp_path / "raw.parquet").metadata.num_row_groups == 3
    assert json.loads((tmp_path / "stats.json").read_text())["n_events"] == N_EVENTS
    # options override params
    cli(["particles", "--input", str(src), "--output", str(tmp_path / "raw2.parquet"), "--chunk-size", "60",
         "--signal-name", "wprime", "--params", json.dumps(WORKFLOW_PARAMS)])
    _check_raw_against_dense(tmp_path / "raw2.parquet", dense, names=("qcd", "wprime"))
    assert pq.ParquetFile(tmp_path / "raw2.parquet").metadata.num_row_groups == 5
    capsys.readouterr()
    cli(["inspect", "--input", str(src)])
    assert '"n_events": 257' in capsys.readouterr().out

    fsrc, extra = tmp_path / "f.h5", tmp_path / "extra.h5"
    write_features_file(fsrc, make_features_frame(300))
    write_features_file(extra, make_features_frame(200, seed=9, with_label=False))
    cli(["features", "--input", str(fsrc), "--extra-background", str(extra), "--params", json.dumps(WORKFLOW_PARAMS),
         "--output", str(tmp_path / "jets.parquet")])
    jets = pq.read_table(tmp_path / "jets.parquet").to_pydict()
    assert set(jets["process"]) == {"qcd", "wprime_lhco", "qcd_extra"}
    assert min(jets["j1_pt"]) > 1000.0

    with pytest.raises(ConfigError, match="chunk"):
        cli(["particles", "--input", str(src), "--output", str(tmp_path / "x.parquet"), "--params", '{"chunk": 5}'])
    with pytest.raises(ConfigError, match="process_names"):
        cli(["particles", "--input", str(src), "--output", str(tmp_path / "x.parquet"),
             "--params", '{"process_names": {"2": "x"}}'])
    with pytest.raises(InputError, match="does not exist"):
        cli(["particles", "--input", str(tmp_path / "nope.h5"), "--output", str(tmp_path / "x.parquet")])
    assert not (tmp_path / "x.parquet").exists()


def test_cli_key_from_params(tmp_path, dense, cli, capsys):
    """The workflow passes dataset.lhco.key as params 'key'; --key overrides it."""
    src = _write(tmp_path, dense, name="events.h5", key="events")
    out = tmp_path / "out" / "raw.parquet"
    with pytest.raises(InputError, match="set dataset.lhco.key: events in the config") as err:
        cli(["particles", "--input", str(src), "--params", json.dumps(WORKFLOW_PARAMS), "--output", str(out)])
    assert "keys in the file: 'events'" in str(err.value)
    _assert_no_output(out)
    cli(["particles", "--input", str(src), "--params", json.dumps({**WORKFLOW_PARAMS, "key": "events"}),
         "--output", str(out)])
    _check_raw_against_dense(out, dense, names=("qcd", "wprime_lhco"))
    out.unlink()
    cli(["particles", "--input", str(src), "--params", json.dumps(WORKFLOW_PARAMS), "--key", "events",
         "--output", str(out)])
    _check_raw_against_dense(out, dense, names=("qcd", "wprime_lhco"))
    capsys.readouterr()
    cli(["inspect", "--input", str(src), "--params", '{"key": "events"}'])
    assert '"key": "events"' in capsys.readouterr().out
    for bad in ('""', "3"):
        with pytest.raises(ConfigError, match="key"):
            cli(["particles", "--input", str(src), "--output", str(tmp_path / "x.parquet"),
                 "--params", f'{{"key": {bad}}}'])
    # the features import reads its own key: the particle file's key in params does not disturb it
    fsrc = tmp_path / "f.h5"
    write_features_file(fsrc, make_features_frame(300))
    cli(["features", "--input", str(fsrc), "--params", json.dumps({**WORKFLOW_PARAMS, "key": "events"}),
         "--output", str(tmp_path / "jets.parquet")])
    assert pq.read_table(tmp_path / "jets.parquet").num_rows > 0


@pytest.mark.slow
def test_workflow_passes_the_key_setting(tmp_path, dense):
    """dataset.lhco.key reaches the import through the rule's params: without it the rule fails with the
    message naming the setting and writes nothing; with it the file imports."""
    import yaml
    from workflow_utils import copy_project, snakemake

    wd = copy_project(tmp_path / "wd")
    src = _write(tmp_path, dense[:40], key="events")
    data = "results/data/lhco-key"
    target = f"{data}/raw/lhco/chunk-0000.parquet"

    def config(**lhco_settings):
        cfg = {"dataset": {"name": "lhco-key", "source": "lhco",
                           "lhco": {"particles": str(src), "chunk_size": 16, **lhco_settings}},
               "studies": {"lhco": {"signal": "wprime_lhco", "injections": [10], "seeds": [0]}},
               "methods": {m: {"enabled": False} for m in ("contrastive", "flow_matching", "diffusion",
                                                          "idealised_pointcloud")}}
        (wd / "lhco.yaml").write_text(yaml.safe_dump(cfg))
        return "lhco.yaml"

    proc = snakemake(wd, target, "--configfile", config(), check=False)
    log_file = wd / data / "logs" / "import_lhco_particles.log"
    assert proc.returncode != 0 and log_file.exists(), proc.stderr[-3000:]
    log = log_file.read_text()
    assert "events_anomalydetection_v2.h5" in log and "keys in the file: 'events'" in log
    assert "set dataset.lhco.key: events in the config" in log
    assert not (wd / target).exists()
    snakemake(wd, target, "--configfile", config(key="events"))
    _check_raw_against_dense(wd / target, dense[:40], names=("qcd", "wprime_lhco"))
    assert pq.ParquetFile(wd / target).metadata.num_row_groups == 3


def test_feature_columns_match_official_order():
    assert list(lhco.FEATURE_COLUMNS) == FEATURE_COLUMNS == [
        "pxj1", "pyj1", "pzj1", "mj1", "tau1j1", "tau2j1", "tau3j1",
        "pxj2", "pyj2", "pzj2", "mj2", "tau1j2", "tau2j2", "tau3j2"]
