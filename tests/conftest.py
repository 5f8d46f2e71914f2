from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def output_cache(tmp_path_factory):
    """Snakemake's output cache of the workflow tests: data stages are computed once per session (with
    pytest-xdist, once per worker: `make test` keeps each test file on one worker, --dist loadfile)."""
    return tmp_path_factory.mktemp("snakemake-cache")


@pytest.fixture
def laptop_config():
    with open(ROOT / "config.yaml") as f:
        return yaml.safe_load(f)


def fake_jets(n_bkg=20000, n_sig=2000, seed=0, signal="sig", background="qcd", mjj_res=3500.0):
    """A synthetic jets table: falling QCD m_jj spectrum and a gaussian signal peak."""
    from resonant.data.schema import JETS_FEATURES_ONLY_SCHEMA

    rng = np.random.default_rng(seed)
    mjj_b = 2200.0 + rng.exponential(600.0, n_bkg)
    mjj_s = rng.normal(mjj_res, 0.05 * mjj_res, n_sig)
    n = n_bkg + n_sig
    cols = {
        "event_id": np.arange(n, dtype=np.int64) * 7 + 3,
        "process": np.array([background] * n_bkg + [signal] * n_sig, dtype=object),
        "label": np.r_[np.zeros(n_bkg), np.ones(n_sig)].astype(np.int8),
        "mjj": np.r_[mjj_b, mjj_s].astype(np.float32),
    }
    for j in ("j1", "j2"):
        for f in ("pt", "eta", "phi", "m", "tau1", "tau2", "tau3"):
            cols[f"{j}_{f}"] = rng.random(n).astype(np.float32)
        cols[f"{j}_n"] = rng.integers(1, 100, n).astype(np.int32)
    perm = rng.permutation(n)  # the input order must not matter
    return pa.table({k: pa.array(np.asarray(v)[perm]) for k, v in cols.items()}).cast(
        pa.schema([JETS_FEATURES_ONLY_SCHEMA.field(k) for k in cols])
    )


def assert_same_jets(fast, slow):
    """Two clustering results (resonant.data.jets.JetResult) agree event by event."""
    np.testing.assert_array_equal(fast.selected, slow.selected)
    for name in slow.columns:
        np.testing.assert_allclose(fast.columns[name], slow.columns[name], rtol=1e-12, atol=1e-12, err_msg=name)
    for j in ("j1", "j2"):
        for x, y in zip(fast.constituents[j], slow.constituents[j]):
            np.testing.assert_array_equal(x, y)


def toy_events(n: int, p: int = 12, seed: int = 0):
    """Dijet-like point clouds: jets with pT ~ m_jj / 2, n in [1, 20) (some above ``p``), random constituents."""
    from resonant.pointcloud import PointCloud, mask_from_counts, n_valid

    rng = np.random.default_rng(seed)
    mjj = rng.uniform(2500, 4500, n).astype(np.float32)
    jets = np.zeros((n, 2, 5), np.float32)
    jets[..., 0] = mjj[:, None] / 2 * rng.uniform(0.8, 1.0, (n, 2))
    jets[..., 1] = rng.normal(0, 1, (n, 2))
    jets[..., 2] = rng.uniform(-np.pi, np.pi, (n, 2))
    jets[..., 3] = rng.uniform(20, 400, (n, 2))
    jets[..., 4] = rng.integers(1, 20, (n, 2))
    jets = np.where((jets[:, 1, 0] > jets[:, 0, 0])[:, None, None], jets[:, ::-1], jets)  # leading first
    mask = mask_from_counts(n_valid(jets, p), p)
    particles = np.zeros((n, 2, p, 3), np.float32)
    particles[..., 0] = -np.sort(-rng.dirichlet(np.ones(p), (n, 2)), axis=-1) * mask
    particles[..., 1:] = rng.normal(0, 0.2, (n, 2, p, 2)) * mask[..., None]
    return PointCloud(jets, particles, mask, mjj)
