"""The embedded generator: model registry, seeds, generate_chunk (Pythia 8) and its CLI.

Pythia-running tests are marked slow and kept to a few events each.
"""

import json
import math
import subprocess
import sys
from pathlib import Path

import awkward as ak
import numpy as np
import pyarrow.parquet as pq
import pytest

from resonant import io
from resonant.data import processes
from resonant.data.generate import (GenerationError, chunk_seed, generate_chunk, generation_metadata, make_pythia,
                                    write_chunk)
from resonant.data.schema import event_id_base, particles_from_table, validate_raw
from resonant.errors import ConfigError, InputError

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "workflow" / "scripts" / "generate.py"

EXAMPLE_PARAMS = {
    "qcd_dijet": {"pthat_min": 1100.0},
    "wprime_xy": {"m_res": 3500.0, "m_x": 500.0, "m_y": 100.0},
    "wprime_wz": {"m_res": 3500.0},
    "zprime_ttbar": {"m_res": 3500.0},
    "qstar_qg": {"m_res": 3500.0},
    "scalar_xy": {"m_res": 3500.0, "m_x": 500.0, "m_y": 100.0},
    "sm_ttbar": {"pthat_min": 1100.0},
    "sm_vjet": {"pthat_min": 1100.0},
}
REQUIRED_MODELS = {"qcd_dijet", "wprime_xy", "wprime_wz", "zprime_ttbar", "qstar_qg"}


# ---------------------------------------------------------------- seeds (no Pythia)


def test_chunk_seed_is_stable():
    # Fixed values: a change here silently changes every generated data set.
    assert chunk_seed(1, "qcd", 0) == 700084562
    assert chunk_seed(1, "qcd", 1) == 109781627
    assert chunk_seed(2, "qcd", 0) == 295725284
    assert chunk_seed(1, "wprime_xy_500_100", 0) == 808144188


def test_chunk_seed_range_and_distinct():
    seeds = {chunk_seed(g, p, c) for g in (0, 1, 12345) for p in ("qcd", "sig", "q") for c in range(200)}
    assert len(seeds) == 3 * 3 * 200  # no collisions among these
    assert all(processes.SEED_MIN <= s <= processes.SEED_MAX for s in seeds)
    assert min(seeds) >= 1  # never 0 (= seed from the clock)


@pytest.mark.parametrize("args", [(1.5, "qcd", 0), (1, "", 0), (1, "qcd", -1), (True, "qcd", 0), (1, None, 0)])
def test_chunk_seed_rejects_bad_input(args):
    with pytest.raises(ConfigError):
        chunk_seed(*args)


# ---------------------------------------------------------------- registry (no Pythia)


def test_registry_has_the_zoo():
    assert REQUIRED_MODELS <= set(processes.model_names())
    assert set(EXAMPLE_PARAMS) >= set(processes.model_names())
    for name, model in processes.MODELS.items():
        assert model.doc, f"model {name} needs a docstring"
        assert model.signal == (name not in ("qcd_dijet", "sm_ttbar", "sm_vjet"))


@pytest.mark.parametrize("model", sorted(EXAMPLE_PARAMS))
def test_every_model_gives_settings(model):
    settings = processes.pythia_settings(model, EXAMPLE_PARAMS[model], seed=42)
    assert "Beams:eCM = 13000.0" in settings
    assert "Print:quiet = on" in settings
    assert settings[-2:] == ["Random:setSeed = on", "Random:seed = 42"]
    assert all(isinstance(s, str) and "=" in s for s in settings)
    # the call form of the registry gives the model part only
    assert processes.MODELS[model](EXAMPLE_PARAMS[model]) == settings[len(processes.COMMON_SETTINGS):-2]


def test_sm_backgrounds_decay_hadronically():
    tt = processes.MODELS["sm_ttbar"]({"pthat_min": 900})
    assert "Top:gg2ttbar = on" in tt and "PhaseSpace:pTHatMin = 900" in tt and "24:onMode = off" in tt
    v = processes.MODELS["sm_vjet"]({})
    assert "WeakBosonAndParton:qg2Wq = on" in v and "23:onIfAny = 1 2 3 4 5" in v
    assert not any(x.startswith(("11", "13", "15")) for x in v)


def test_qcd_default_and_settings():
    assert processes.resolve_params("qcd_dijet", {}) == {"pthat_min": 850.0}
    s = processes.MODELS["qcd_dijet"]({"pthat_min": 800})
    assert "HardQCD:all = on" in s and "PhaseSpace:pTHatMin = 800" in s and "PartonLevel:MPI = on" in s


def test_wprime_xy_remasses_w_and_z():
    s = processes.MODELS["wprime_xy"]({"m_res": 3500, "m_x": 500, "m_y": 100})
    for needed in ("34:m0 = 3500", "24:m0 = 500", "23:m0 = 100", "24:doForceWidth = on", "23:doForceWidth = on",
                   "34:onIfMatch = 24 23", "Wprime:coup2WZ = 1", "24:onMode = off", "23:onMode = off"):
        assert any(x.startswith(needed) for x in s), needed
    m_min = {int(x.split(":")[0]): float(x.split("=")[1]) for x in s if ":mMin" in x}
    m_max = {int(x.split(":")[0]): float(x.split("=")[1]) for x in s if ":mMax" in x}
    assert m_min[24] < 500 < m_max[24] and m_min[23] < 100 < m_max[23] and m_min[34] < 3500 < m_max[34]
    assert m_min[34] > 500 + 100  # no off-shell W' below the X Y threshold
    # only light quarks for X and Y
    decays = [x for x in s if x.startswith(("24:onIf", "23:onIf"))]
    assert all(not set(x.split("=")[1].split()) & {"4", "5", "6"} for x in decays), decays


def test_unknown_model_is_a_clear_error():
    with pytest.raises(ConfigError, match="unknown model 'wprime'") as exc:
        processes.pythia_settings("wprime", {})
    assert "wprime_xy" in str(exc.value)


@pytest.mark.parametrize("model, params, match", [
    ("wprime_xy", {"m_res": 3500, "m_x": 500}, r"'wprime_xy' needs parameter 'm_y'"),
    ("wprime_xy", {"m_res": 3500, "m_x": 500, "m_y": 100, "mx": 1}, r"'wprime_xy' has no parameter.*'mx'"),
    ("wprime_xy", {"m_res": 3500, "m_x": "500", "m_y": 100}, r"'m_x' must be a finite number"),
    ("wprime_xy", {"m_res": 3500, "m_x": 500, "m_y": math.nan}, r"'m_y' must be a finite number"),
    ("wprime_xy", {"m_res": 3500, "m_x": 500, "m_y": True}, r"'m_y' must be a finite number"),
    ("wprime_xy", {"m_res": 3500, "m_x": 3000, "m_y": 600}, r"m_x \+ m_y .* below m_res"),
    ("wprime_xy", {"m_res": -1, "m_x": 500, "m_y": 100}, r"'m_res' = -1 out of range"),
    ("qcd_dijet", {"pthat_min": 0}, r"'qcd_dijet': parameter 'pthat_min' = 0 out of range"),
    ("qcd_dijet", {"pthat_min": 7000}, r"'pthat_min' = 7000 out of range"),
    ("zprime_ttbar", {"m_res": 300}, r"'zprime_ttbar': parameter 'm_res'"),
    ("qstar_qg", [3500], r"must be a mapping"),
    ("scalar_xy", {"m_res": 3500, "m_x": 500, "m_y": 100, "width_frac": 0.5}, r"'width_frac' = 0.5 out of range"),
])
def test_bad_params_are_clear_errors(model, params, match):
    with pytest.raises(ConfigError, match=match):
        processes.pythia_settings(model, params)


@pytest.mark.parametrize("seed", [0, -5, 900_000_001, 1.5, True])
def test_bad_pythia_seed_rejected(seed):
    with pytest.raises(ConfigError, match="seed"):
        processes.pythia_settings("qcd_dijet", {}, seed=seed)


@pytest.mark.parametrize("kwargs, key", [
    ({"n_events": -1}, "n_events"), ({"n_events": 2**24}, "n_events"), ({"label": 2}, "label"),
    ({"seed": 0}, "seed"), ({"process": ""}, "process"), ({"chunk": 2**16}, "chunk"),
    ({"model": "nope"}, "model"), ({"detector": {"smear": True}}, "detector.smear"), ({"batch_size": 0}, "batch_size"),
])
def test_generate_chunk_validates_before_running(kwargs, key):
    args = dict(model="qcd_dijet", params={}, n_events=5, seed=11, process="qcd", label=0, chunk=0)
    args.update(kwargs)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        generate_chunk(**args, progress=False)


def test_write_chunk_validates(tmp_path):
    from resonant.data.schema import raw_table

    parts = ak.Array([[{"pt": 1.0, "eta": 0.0, "phi": 0.0}], [{"pt": 2.0, "eta": 0.0, "phi": 0.0}]])
    bad = raw_table([7, 7], "qcd", 0, parts)  # duplicate event ids
    with pytest.raises(InputError, match="not unique"):
        write_chunk(bad, tmp_path / "bad.parquet")
    assert not (tmp_path / "bad.parquet").exists()


# ---------------------------------------------------------------- Pythia


@pytest.fixture(scope="module")
def qcd_table():
    return generate_chunk("qcd_dijet", {"pthat_min": 1100.0}, 6, 1234, "qcd", 0, 3, progress=False)


@pytest.mark.slow
@pytest.mark.parametrize("model", sorted(EXAMPLE_PARAMS))
def test_every_model_generates_events(model):
    n = 3
    table = generate_chunk(model, EXAMPLE_PARAMS[model], n, chunk_seed(1, model, 0), model,
                           int(processes.MODELS[model].signal), 0, progress=False)
    validate_raw(table, model)
    assert table.num_rows == n
    assert table.column("label").to_pylist() == [int(processes.MODELS[model].signal)] * n
    assert table.column("process").to_pylist() == [model] * n
    parts = particles_from_table(table)
    n_part = ak.to_numpy(ak.num(parts))
    assert np.all(n_part > 50)  # a 13 TeV event with a TeV-scale hard process has many particles
    sum_pt = ak.to_numpy(ak.sum(parts.pt, axis=1))
    assert np.all(sum_pt > 1000.0)  # the resonance (or pTHat > 1.1 TeV) is visible


@pytest.mark.slow
def test_schema_ids_and_pthat(qcd_table):
    validate_raw(qcd_table, "qcd")
    ids = qcd_table.column("event_id").to_numpy()
    assert ids.tolist() == (event_id_base("qcd", 3) + np.arange(6)).tolist()
    assert len(set(ids)) == len(ids)
    assert qcd_table.schema.field("pthat").type == "float"
    assert np.all(qcd_table.column("pthat").to_numpy() >= 1100.0)
    meta = generation_metadata(qcd_table)
    assert meta["generator"]["model"] == "qcd_dijet" and meta["generator"]["seed"] == 1234
    assert meta["generator"]["n_events"] == 6 and meta["detector"]["enabled"] is True
    parts = particles_from_table(qcd_table)
    assert ak.all(parts.pt >= 0.5) and ak.all(abs(parts.eta) < 4.9)


@pytest.mark.slow
def test_same_seed_identical_other_seed_differs(qcd_table, tmp_path):
    again = generate_chunk("qcd_dijet", {"pthat_min": 1100.0}, 6, 1234, "qcd", 0, 3, progress=False, batch_size=4)
    assert again.equals(qcd_table, check_metadata=True)  # also independent of the batch size
    write_chunk(qcd_table, tmp_path / "a.parquet")
    write_chunk(again, tmp_path / "b.parquet")
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()
    other = generate_chunk("qcd_dijet", {"pthat_min": 1100.0}, 6, chunk_seed(1, "qcd", 4), "qcd", 0, 4,
                           progress=False)
    assert not np.array_equal(other.column("pthat").to_numpy(), qcd_table.column("pthat").to_numpy())
    assert set(other.column("event_id").to_pylist()).isdisjoint(qcd_table.column("event_id").to_pylist())


@pytest.mark.slow
def test_write_chunk_roundtrip(qcd_table, tmp_path):
    path = tmp_path / "raw" / "chunk-0003.parquet"
    write_chunk(qcd_table, path)
    back = io.read_table(path)
    validate_raw(back, path)
    assert back.equals(qcd_table)
    assert io.table_metadata(path)["generator"]["process"] == "qcd"


@pytest.mark.slow
def test_detector_disabled_gives_truth_particles(qcd_table):
    truth = generate_chunk("qcd_dijet", {"pthat_min": 1100.0}, 6, 1234, "qcd", 0, 3, detector={"enabled": False},
                           progress=False)
    n_truth = ak.to_numpy(ak.num(particles_from_table(truth)))
    n_det = ak.to_numpy(ak.num(particles_from_table(qcd_table)))
    assert np.all(n_truth > n_det)  # no threshold, no acceptance
    # same Pythia events: the hard scale is identical
    assert np.array_equal(truth.column("pthat").to_numpy(), qcd_table.column("pthat").to_numpy())


@pytest.mark.slow
def test_progress_log(capsys):
    generate_chunk("qcd_dijet", {"pthat_min": 1100.0}, 3, 99, "qcd", 0, 0, batch_size=2)
    err = capsys.readouterr().err
    assert "[generate qcd chunk 0] 2/3 events" in err and "3/3 events" in err and "ev/s" in err
    assert "PYTHIA" not in err  # Pythia's own banner/tables stay quiet


@pytest.mark.slow
def test_wprime_xy_hard_process_masses_and_flavours():
    s = processes.pythia_settings("wprime_xy", EXAMPLE_PARAMS["wprime_xy"], seed=77)
    batch = make_pythia(s, "wprime_xy").nextBatch(20)
    prt = batch.prt
    for pid, mass in ((24, 500.0), (23, 100.0)):
        m = ak.to_numpy(ak.firsts(prt.m[abs(prt.id) == pid]))
        assert np.all(np.abs(m - mass) < 0.1 * mass), (pid, m)
    # the X, Y decay products (status -23 quarks of the hard process) are u, d, s only
    q = ak.to_numpy(ak.flatten(prt.id[prt.status == -23]))
    assert len(q) == 4 * 20 and set(np.abs(q)) <= {1, 2, 3}
    mhat = ak.to_numpy(batch.info.mHat)
    assert np.all(np.abs(mhat - 3500.0) < 400.0)


@pytest.mark.slow
def test_make_pythia_reports_bad_setting():
    with pytest.raises(GenerationError, match="Bogus:thing"):
        make_pythia(["Bogus:thing = 1"], "test")


# ---------------------------------------------------------------- CLI


def test_cli_help():
    out = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, check=True)
    assert "--detector" in out.stdout and "wprime_xy" in out.stdout


def test_cli_bad_model_exits_with_clear_error(tmp_path):
    out = subprocess.run([sys.executable, str(SCRIPT), "--model", "nope", "--n-events", "2", "--seed", "3",
                          "--process", "qcd", "--label", "0", "--chunk", "0", "--output", str(tmp_path / "x.parquet")],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "unknown model 'nope'" in out.stderr
    assert not (tmp_path / "x.parquet").exists()


@pytest.mark.slow
def test_cli_writes_a_valid_chunk(tmp_path):
    det_file = tmp_path / "det.json"
    det_file.write_text(json.dumps({"pt_min": 1.0}))
    out_path = tmp_path / "raw" / "chunk-0001.parquet"
    subprocess.run([sys.executable, str(SCRIPT), "--model", "wprime_xy",
                    "--params", json.dumps(EXAMPLE_PARAMS["wprime_xy"]), "--n-events", "3", "--seed", "17",
                    "--process", "sig", "--label", "1", "--chunk", "1", "--detector", str(det_file),
                    "--output", str(out_path)], check=True, capture_output=True, text=True)
    table = pq.read_table(out_path)
    validate_raw(table, out_path)
    assert table.num_rows == 3 and table.column("label").to_pylist() == [1, 1, 1]
    assert io.table_metadata(out_path)["detector"]["pt_min"] == 1.0
    assert ak.all(particles_from_table(table).pt >= 1.0)
