"""High-level features and the reference classifiers on synthetic study sets."""

import numpy as np
import pyarrow as pa
import pytest

from resonant.features import high_level
from resonant.metrics import evaluate
from resonant.references import score_table, train_ensemble

SETTINGS = dict(features=["mj1", "dmj", "tau21_j1", "tau21_j2"], n_ensemble=2, max_depth=3, learning_rate=0.2,
                n_estimators=100, early_stopping=10)


def jets(n, signal, rng, split=True):
    """Signal: jet masses near (100, 500), low tau21. Background: falling masses, tau21 ~ 0.7."""
    if signal:
        m = np.c_[rng.normal(500, 30, n), rng.normal(100, 15, n)]  # leading jet is the heavy one here
        t21 = rng.normal(0.3, 0.08, (n, 2))
    else:
        m = rng.exponential(80, (n, 2)) + 10
        t21 = rng.normal(0.7, 0.12, (n, 2))
    tau1 = rng.uniform(0.1, 0.3, (n, 2))
    cols = {"event_id": np.arange(n) + (10**6 if signal else 0), "label": np.full(n, int(signal), np.int8),
            "mjj": rng.normal(3500, 50, n).astype(np.float32)}
    for k, j in enumerate(("j1", "j2")):
        cols[f"{j}_m"] = m[:, k]
        cols[f"{j}_tau1"] = tau1[:, k]
        cols[f"{j}_tau2"] = tau1[:, k] * t21[:, k]
        cols[f"{j}_tau3"] = tau1[:, k] * t21[:, k] * 0.7
    if split:
        cols["split"] = np.where(rng.random(n) < 0.2, "val", "train")
    return pa.table(cols)


def test_features_order_jets_by_mass():
    t = pa.table({"j1_m": [500.0, 80.0], "j2_m": [100.0, 300.0], "j1_tau1": [1.0, 1.0], "j1_tau2": [0.5, 0.2],
                  "j1_tau3": [0.1, 0.1], "j2_tau1": [1.0, 1.0], "j2_tau2": [0.9, 0.4], "j2_tau3": [0.3, 0.3],
                  "mjj": [3500.0, 3000.0]})
    f = high_level(t, ["mj1", "mj2", "dmj", "tau21_j1", "tau21_j2"])
    assert f[:, 0].tolist() == [100.0, 80.0]
    assert f[:, 1].tolist() == [500.0, 300.0]
    assert f[:, 2].tolist() == [400.0, 220.0]
    assert f[:, 3] == pytest.approx([0.9, 0.2], rel=1e-4)  # lighter jet's tau21
    assert f[:, 4] == pytest.approx([0.5, 0.4], rel=1e-4)


def test_supervised_separates_an_easy_signal():
    rng = np.random.default_rng(0)
    sets = {"sr_signal": jets(2000, True, rng), "sr_background": jets(4000, False, rng)}
    models = train_ensemble("supervised", sets, SETTINGS, seed=0)
    test = pa.concat_tables([jets(500, True, rng, split=False), jets(5000, False, rng, split=False)])
    scores = [m.predict(high_level(test, SETTINGS["features"])) for m in models]
    m = evaluate(test.column("label").to_numpy(), np.mean(scores, axis=0))
    assert m["auc"] > 0.99
    assert m["max_sic"] > 10


def test_idealised_detector_finds_injected_signal_without_labels():
    rng = np.random.default_rng(1)
    data = pa.concat_tables([jets(6000, False, rng), jets(600, True, rng)])  # 10% signal, labels unused
    sets = {"sr": data, "sr_background": jets(6000, False, rng)}
    models = train_ensemble("idealised", sets, SETTINGS, seed=3)
    test = pa.concat_tables([jets(500, True, rng, split=False), jets(5000, False, rng, split=False)])
    s = np.mean([m.predict(high_level(test, SETTINGS["features"])) for m in models], axis=0)
    st = score_table(test, [s, s])
    assert st.column_names == ["event_id", "label", "mjj", "score_0", "score_1", "score"]
    assert evaluate(test.column("label").to_numpy(), s)["auc"] > 0.9


def test_training_is_deterministic_and_roundtrips(tmp_path):
    rng = np.random.default_rng(2)
    sets = {"sr_signal": jets(500, True, rng), "sr_background": jets(1000, False, rng)}
    x = high_level(jets(100, False, rng, split=False), SETTINGS["features"])
    a = train_ensemble("supervised", sets, SETTINGS, seed=5)[0]
    b = train_ensemble("supervised", sets, SETTINGS, seed=5)[0]
    assert np.array_equal(a.predict(x), b.predict(x))
    a.save(tmp_path / "bdt.json")
    from resonant.models.bdt import BDT

    c = BDT.load(tmp_path / "bdt.json")
    assert np.allclose(c.predict(x), a.predict(x))
    assert c.history == a.history
