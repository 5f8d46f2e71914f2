"""The LHC Olympics route through the workflow, on files in the official layouts
built from Pythia events: the particle file gives the same jets as clustering
the events directly, and the features file alone carries a study to the end."""

import awkward as ak
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from lhco_fixtures import FEATURE_COLUMNS, N_COLUMNS, write_features_file, write_particle_file
from resonant.data.generate import generate_chunk
from resonant.data.jets import jets_table
from resonant.data.schema import particles_from_table
from workflow_utils import copy_project, snakemake

pytestmark = pytest.mark.slow
DATA = "results/data/lhco-test"


@pytest.fixture(scope="module")
def events():
    qcd = generate_chunk("qcd_dijet", {"pthat_min": 1100.0}, 500, 11, "q", 0, 0, progress=False)
    sig = generate_chunk("wprime_xy", {"m_res": 3500.0, "m_x": 500.0, "m_y": 100.0}, 250, 12, "s", 1, 0,
                         progress=False)
    raw = pa.concat_tables([qcd, sig])
    return raw.take(pa.array(np.random.default_rng(0).permutation(len(raw))))


def dense_layout(raw: pa.Table) -> np.ndarray:
    """700 x (pT, eta, phi) zero padded, then the label: the official particle layout."""
    parts = particles_from_table(raw)
    dense = np.zeros((len(raw), N_COLUMNS))
    for i, ev in enumerate(ak.to_list(parts)):
        for k, p in enumerate(ev[:700]):
            dense[i, 3 * k:3 * k + 3] = (p["pt"], p["eta"], p["phi"])
    dense[:, -1] = raw.column("label").to_numpy()
    return dense


def features_frame(jets: pa.Table) -> pd.DataFrame:
    c = {n: jets.column(n).to_numpy().astype(np.float64) for n in jets.column_names if n.startswith("j")
         and "constituents" not in n}
    data = {}
    for j in (1, 2):
        pt, eta, phi = c[f"j{j}_pt"], c[f"j{j}_eta"], c[f"j{j}_phi"]
        data.update({f"pxj{j}": pt * np.cos(phi), f"pyj{j}": pt * np.sin(phi), f"pzj{j}": pt * np.sinh(eta),
                     f"mj{j}": c[f"j{j}_m"], f"tau1j{j}": c[f"j{j}_tau1"], f"tau2j{j}": c[f"j{j}_tau2"],
                     f"tau3j{j}": c[f"j{j}_tau3"]})
    df = pd.DataFrame({k: data[k] for k in FEATURE_COLUMNS})
    df["label"] = jets.column("label").to_numpy().astype(np.float64)
    return df


def lhco_config(wd, **lhco):
    cfg = {
        "dataset": {"name": "lhco-test", "source": "lhco", "lhco": {"chunk_size": 200, **lhco}},
        "selection": {"max_constituents": 16},
        "studies": {"lhco": {"signal": "wprime_lhco", "injections": [40], "seeds": [0],
                             "sr_background": {"data": 0.4, "idealised": 0.3, "test": 0.3}}},
        "methods": {"supervised": {"n_ensemble": 1, "n_estimators": 30},
                    "idealised": {"n_ensemble": 1, "n_estimators": 30},
                    "cathode": {"flow": {"transforms": 2, "hidden": 8, "epochs": 3, "n_best": 1},
                                "classifier": {"folds": 3, "n_ensemble": 1, "n_estimators": 30}},
                    "contrastive": {"enabled": False}, "flow_matching": {"enabled": False},
                    "diffusion": {"enabled": False},
                    "idealised_pointcloud": {"enabled": False}},
    }
    (wd / "lhco.yaml").write_text(yaml.safe_dump(cfg))
    return "lhco.yaml"


def test_particle_file_gives_the_same_jets_as_the_generator_route(events, tmp_path):
    wd = copy_project(tmp_path / "wd")
    write_particle_file(tmp_path / "events_anomalydetection_v2.h5", dense_layout(events))
    cfg = lhco_config(wd, particles=str(tmp_path / "events_anomalydetection_v2.h5"))
    snakemake(wd, f"{DATA}/jets.parquet", "--configfile", cfg)
    imported = pq.read_table(wd / DATA / "jets.parquet")
    direct, _ = jets_table(events, max_constituents=16, progress=False)
    assert len(imported) == len(direct) > 100
    for col in ("mjj", "j1_pt", "j1_m", "j2_m", "j1_tau2", "j2_tau3", "j1_n"):
        assert np.allclose(imported.column(col).to_numpy(), direct.column(col).to_numpy(), rtol=1e-5), col
    assert imported.column("j1_constituents").to_pylist()[:5] == direct.column("j1_constituents").to_pylist()[:5]
    names = dict(zip(imported.column("label").to_pylist(), imported.column("process").to_pylist()))
    assert names == {0: "qcd", 1: "wprime_lhco"}


def test_features_file_alone_runs_a_study_to_the_report(events, tmp_path):
    wd = copy_project(tmp_path / "wd")
    jets, _ = jets_table(events, max_constituents=16, progress=False)
    write_features_file(tmp_path / "features.h5", features_frame(jets))
    cfg = lhco_config(wd, features=str(tmp_path / "features.h5"))
    snakemake(wd, "--configfile", cfg)
    imported = pq.read_table(wd / DATA / "jets.parquet")
    assert "j1_constituents" not in imported.column_names
    assert np.allclose(np.sort(imported.column("mjj").to_numpy()), np.sort(jets.column("mjj").to_numpy()),
                       rtol=1e-4)
    for method in ("supervised", "idealised", "cathode"):
        assert (wd / f"results/lhco/inj40/seed0/{method}/metrics.json").exists()
