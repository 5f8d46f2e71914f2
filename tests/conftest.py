from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


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
