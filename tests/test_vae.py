"""The VAE branch on synthetic jets: KL-peak rule, inputs, training without labels, scores, characterisation."""

import json
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

from conftest import ROOT
from resonant.models import vae as mv

mv.configure(threads=1)  # before any TensorFlow op

from resonant import io, vae  # noqa: E402
from resonant.metrics import evaluate  # noqa: E402

SR = (3300.0, 3700.0)
SB = (2300.0, 5000.0)
# small and fast: the default 100 steps per epoch at lr 0.01, on batches of 250 instead of 1000
FAST = {"batch_size": 250, "epochs": 30, "n_ensemble": 2}
# a signal in the low-density tails of both jet masses (no substructure difference): the events far from
# the bulk, and from the prior's centre, along the direction the latent encodes
TAIL = {"sig_tau21": False, "sig_masses": (500.0, 400.0)}


def jets_study_set(n_bkg, n_sig, seed, val_fraction=0.25, label=True, sig_mjj=3500.0, sig_tau21=True,
                   bkg_mass_scale=70.0, mass_growth=0.5, tau_concentration=1.0, sig_masses=(500.0, 100.0)):
    """A study set (sb + sr together) of jets-like rows: falling m_jj; QCD-like jets, the heavier one's mass
    falling with scale ``bkg_mass_scale``, both growing with m_jj as (m_jj / 3 TeV)^mass_growth; a resonance
    at ``sig_mjj`` decaying to jets of ``sig_masses`` (two-prong, i.e. low tau21, if ``sig_tau21``). The
    N-subjettiness ratios are beta(6c, 3c) with c = ``tau_concentration`` (larger: narrower)."""
    rng = np.random.default_rng(seed)
    mjj_b = 2300.0 + rng.exponential(500.0, 3 * n_bkg)
    mjj_b = mjj_b[mjj_b < SB[1]][:n_bkg]
    mjj_s = rng.normal(sig_mjj, 70.0, n_sig)
    n = n_bkg + n_sig
    growth = np.r_[(mjj_b / 3000.0) ** mass_growth, np.ones(n_sig)]
    m_a, m_b = sig_masses
    heavy = np.r_[30.0 + rng.exponential(bkg_mass_scale, n_bkg), rng.normal(m_a, 0.04 * m_a, n_sig)] * growth
    light = np.r_[30.0 + rng.exponential(40.0, n_bkg), rng.normal(m_b, 0.08 * m_b, n_sig)] * growth
    heavy, light = np.maximum(heavy, light), np.minimum(heavy, light)
    c = tau_concentration
    tau21 = rng.beta(6 * c, 3 * c, (n, 2))  # columns: lighter, heavier jet
    if sig_tau21:
        tau21[n_bkg:] = rng.beta(2, 9, (n_sig, 2))
    tau32 = rng.beta(6 * c, 3 * c, (n, 2))
    first_heavy = rng.random(n) < 0.5  # which jet is j1 must not matter: the inputs order them by mass
    cols = {"event_id": np.arange(n, dtype=np.int64) * 3 + 1, "mjj": np.r_[mjj_b, mjj_s]}
    for j, is_heavy in (("j1", first_heavy), ("j2", ~first_heavy)):
        k = is_heavy.astype(int)
        t21, t32 = tau21[np.arange(n), k], tau32[np.arange(n), k]
        tau1 = rng.uniform(0.2, 0.6, n)
        cols[f"{j}_m"] = np.where(is_heavy, heavy, light)
        cols[f"{j}_tau1"], cols[f"{j}_tau2"], cols[f"{j}_tau3"] = tau1, tau1 * t21, tau1 * t21 * t32
    if label:
        cols["label"] = np.r_[np.zeros(n_bkg), np.ones(n_sig)].astype(np.int8)
    perm = rng.permutation(n)
    t = pa.table({k: (v[perm].astype(np.float32) if v.dtype.kind == "f" else v[perm]) for k, v in cols.items()})
    return t.append_column("split", pa.array(np.where(rng.random(n) < val_fraction, "val", "train")))


def test_kl_peak_rule_on_synthetic_histories():
    rise_fall = [1.0, 1.2, 1.5, 1.7, 1.8, 2.0, 1.9, 1.8, 1.6, 1.5, 1.4, 1.3]
    assert vae.kl_peak(rise_fall) == 5  # 5 rises to epoch 5, then 5 falls: keep epoch 5
    assert vae.kl_peak(rise_fall[:10]) is None  # only 4 falls so far: no peak yet
    assert vae.kl_peak(rise_fall[1:]) is None  # only 4 rises before the maximum
    assert vae.kl_peak(rise_fall, rise=3, fall=2) == 5
    noisy = [1.0, 1.3, 1.2, 1.6, 1.5, 1.9, 1.7, 1.6, 1.4, 1.3, 1.2, 1.1]  # rises, but not consecutively
    assert vae.kl_peak(noisy) is None
    # a plateau or a NaN breaks a run; the first complete peak wins
    assert vae.kl_peak([1, 2, 3, 4, 5, 5, 4, 3, 2, 1, 0]) is None
    with_nan = [1, 2, 3, np.nan, 5, 6, 5, 4, 3, 2, 1]
    assert vae.kl_peak(with_nan, rise=2, fall=2) is None and vae.kl_peak(with_nan, rise=1, fall=2) == 5
    two = [0, 1, 2, 3, 4, 5, 4, 3, 2, 1, 0, 1, 2, 3, 4, 9, 8, 7, 6, 5, 4]
    assert vae.kl_peak(two) == 5
    with pytest.raises(ValueError):
        vae.kl_peak(rise_fall, rise=0)


def test_inputs_are_the_jet_observables_ordered_by_mass_without_mjj():
    assert vae.INPUTS == ("mj1", "mj2", "tau21_j1", "tau21_j2", "tau32_j1", "tau32_j2")
    assert "mjj" not in vae.INPUTS and "mjj" in vae.TRAIN_COLUMNS and "label" not in vae.TRAIN_COLUMNS
    t = jets_study_set(200, 20, seed=3)
    X = vae.inputs(t)
    assert X.shape == (220, 6)
    assert np.all(X[:, 1] >= X[:, 0])  # mj2 is the heavier jet
    shifted = t.set_column(t.schema.get_field_index("mjj"), "mjj", pa.array(t.column("mjj").to_numpy() * 2))
    np.testing.assert_array_equal(vae.inputs(shifted), X)  # m_jj does not enter
    bad = t.set_column(t.schema.get_field_index("j1_tau1"), "j1_tau1", pa.array(np.full(220, np.nan, np.float32)))
    with pytest.raises(ValueError, match="non-finite"):
        vae.inputs(bad, "bad.parquet")


@pytest.fixture(scope="module")
def easy():
    """An ensemble trained on data with an easy injected signal (3.5%, in the tails of both jet masses) and no
    label column; a labelled test set."""
    data = jets_study_set(7000, 250, seed=1, **TAIL).drop(["label", "event_id"])
    assert "label" not in data.column_names
    members = vae.train_ensemble(data, FAST, seed=4, source="easy data")
    test = jets_study_set(3000, 300, seed=2, **TAIL)
    return {"data": data, "members": members, "test": test}


def test_kl_score_finds_an_easy_signal_without_labels(easy):
    """Physics: signal events in the low-density tails of the jet masses are encoded far from the bulk of the
    latent distribution and from the prior's centre: the ensemble's mean KL ranks them first."""
    X_test = vae.inputs(easy["test"])
    scores = vae.kl_scores([m for m, _, _ in easy["members"]], X_test)
    y = easy["test"].column("label").to_numpy()
    auc = evaluate(y, np.mean(scores, axis=0))["auc"]
    assert auc > 0.8, auc
    for _, hist, _ in easy["members"]:
        n = hist["epochs_run"]
        assert len(hist["val_kl"]) == n and 0 <= hist["selected_epoch"] < n
        assert hist["steps_per_epoch"] == 100
        if hist["peak_found"]:
            assert hist["selected_epoch"] == vae.kl_peak(hist["val_kl"], 5, 5)
        else:  # no peak in the allowed epochs: the epoch of the largest validation KL
            assert n == FAST["epochs"] and hist["selected_epoch"] == int(np.argmax(hist["val_kl"]))


def test_same_seed_same_scores(easy, caplog):
    X, Xv = vae.train_val(easy["data"])
    X_test = vae.inputs(easy["test"])[:500]
    s = {"epochs": 3, "batch_size": 500, "steps_per_epoch": 10}
    with caplog.at_level("INFO", logger="resonant.vae"):
        (a, ha), (b, hb) = (vae.train_member(X, Xv, s, seed=11) for _ in range(2))
        c = vae.train_member(X, Xv, s, seed=12)[0]
    np.testing.assert_array_equal(a.kl_numpy(X_test), b.kl_numpy(X_test))
    assert ha["val_kl"] == hb["val_kl"] and ha["loss"] == hb["loss"]
    assert not np.allclose(a.kl_numpy(X_test), c.kl_numpy(X_test))
    epoch_lines = [r for r in caplog.records if " epoch " in r.getMessage() and r.levelname == "INFO"]
    assert len(epoch_lines) == 3 * 3  # one line per epoch
    # 3 epochs cannot show a peak: the epoch of the largest validation KL is kept, with a warning
    assert ha["selected_epoch"] == int(np.argmax(ha["val_kl"])) and not ha["peak_found"]
    assert sum("no validation KL peak" in r.getMessage() for r in caplog.records if r.levelname == "WARNING") == 3


def test_an_epoch_is_a_number_of_optimizer_steps():
    """steps_per_epoch optimizer steps on full batches between two validation KLs, carrying on through the
    data across passes; None: one pass per epoch (the last batch smaller)."""
    t = jets_study_set(900, 0, seed=9)
    X, Xv = vae.train_val(t)
    n = len(X)
    for steps, per_epoch in ((7, 7), (None, -(-n // 128))):
        s = {"epochs": 3, "batch_size": 128, "steps_per_epoch": steps, "rise": 3}
        model, hist = vae.train_member(X, Xv, s, seed=2)
        assert hist["steps_per_epoch"] == per_epoch and hist["epochs_run"] == 3
        assert int(model.optimizer.iterations.numpy()) == 3 * per_epoch
    # the stream of batches: full batches, every event once per pass, passes joined without a gap
    stream, rng = mv.BatchStream(), np.random.default_rng(0)
    batches = [*stream.epoch(10, 4, rng, steps=3), *stream.epoch(10, 4, rng, steps=2)]
    assert [len(b) for b in batches] == [4] * 5
    flat = np.concatenate(batches)
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:]) == list(range(10))
    one_pass = list(stream.epoch(10, 4, rng))
    assert [len(b) for b in one_pass] == [4, 4, 2] and sorted(np.concatenate(one_pass)) == list(range(10))


def test_scaler_is_stored_with_the_model(easy, tmp_path):
    model, hist, seed = easy["members"][0]
    X, _ = vae.train_val(easy["data"])
    np.testing.assert_allclose(model.scaling.values, np.abs(X).max(0), rtol=1e-6)
    vae.save_member(model, hist, tmp_path / "m.keras", meta={"seed": seed})
    loaded = vae.load_member(tmp_path / "m.keras")
    np.testing.assert_array_equal(loaded.scaling.values, model.scaling.values)
    X_test = vae.inputs(easy["test"])
    np.testing.assert_allclose(loaded.kl_numpy(X_test), model.kl_numpy(X_test), rtol=1e-6, atol=1e-6)
    meta = json.loads((tmp_path / "m.json").read_text())
    assert meta["inputs"] == list(vae.INPUTS) and meta["seed"] == seed
    assert meta["history"]["scaler"] == pytest.approx(list(model.scaling.values))
    assert meta["config"]["latent_dim"] == 1 and meta["config"]["alpha"] == 5000.0


def test_vae_stages_do_not_need_torch():
    """The VAE runs in the TensorFlow environment: nothing it imports may pull in torch or xgboost."""
    code = ("import sys; sys.path.insert(0, 'workflow/scripts'); import vae_train, vae_characterise; "
            "bad = [m for m in ('torch', 'xgboost', 'lightning') if m in sys.modules]; print(bad); "
            "sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_train_script_writes_models_and_scores(tmp_path):
    sys.path.insert(0, str(ROOT / "workflow" / "scripts"))
    try:
        import vae_train
    finally:
        sys.path.pop(0)
    data = jets_study_set(1500, 50, seed=5)
    in_sr = (data.column("mjj").to_numpy() >= SR[0]) & (data.column("mjj").to_numpy() < SR[1])
    io.write_table(data.filter(pa.array(~in_sr)), tmp_path / "sb.parquet")
    io.write_table(data.filter(pa.array(in_sr)), tmp_path / "sr.parquet")
    io.write_table(jets_study_set(300, 30, seed=6).drop(["split"]), tmp_path / "test.parquet")
    prm = {"epochs": 2, "batch_size": 500, "steps_per_epoch": 5, "n_ensemble": 2, "seed": 3, "study": "s",
           "injection": 50}
    vae_train.main(["--sb", str(tmp_path / "sb.parquet"), "--sr", str(tmp_path / "sr.parquet"),
                    "--test", str(tmp_path / "test.parquet"), "--params", json.dumps(prm),
                    "--models-dir", str(tmp_path / "models"), "--scores", str(tmp_path / "scores.parquet")])
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == [
        "member_00.json", "member_00.keras", "member_01.json", "member_01.keras"]
    t = io.read_table(tmp_path / "scores.parquet")
    assert t.column_names == ["event_id", "label", "mjj", "score_0", "score_1", "score"]
    assert t.num_rows == 330 and np.all(np.isfinite(t.column("score").to_numpy()))
    assert io.table_metadata(tmp_path / "scores.parquet")["seed"] == 3


def test_characterisation_locates_a_strong_signal_in_the_sr(tmp_path):
    """Signal differing from the background only in the heavier jet mass (500 GeV, in the tail of a falling
    spectrum): the marginal of the heavier jet mass deviates most from the background-only band in the SR."""
    # lr x steps_per_epoch = 1 as in the defaults, in 4x fewer steps
    s = {"batch_size": 250, "epochs": 20, "steps_per_epoch": 25, "lr": 0.04,
         "characterisation": {"epochs": 80, "patience": 10, "batch_size": 250, "n_subsets": 3,
                              "subset_fraction": 0.8, "grid": {"n_z": 12, "n_mjj": 28}}}
    shape = {"sig_tau21": False, "bkg_mass_scale": 200.0}
    full = jets_study_set(5000, 500, seed=7, **shape)
    labels = full.column("label").to_numpy()  # kept aside: training never sees them
    with_signal = full.drop(["label"])
    without = jets_study_set(5000, 0, seed=8, **shape).drop(["label"])
    study = vae.characterisation_study(with_signal, without, s, seed=1, mjj_range=SB, sr=SR)
    heavy = study["deviations"]["signal"]["mj2"]
    assert SR[0] <= heavy["mjj"] <= SR[1] and heavy["in_sr"], heavy
    assert heavy["deviation"] > 2 and heavy["excess"] > 0, heavy  # more heavy jets: the marginal rises
    grid = study["signal"]["mjj_grid"]
    assert study["signal"]["decoded"].shape == (28, 12, 6) and SB[0] <= grid[0] < grid[-1] <= SB[1]
    np.testing.assert_array_equal(grid, study["subsets"][0]["mjj_grid"])  # one m_jj grid for all
    summary = vae.characterisation_summary(study, SR)
    assert summary["largest_deviation"]["mj2"] == heavy
    json.dumps(summary, default=io._json_default)
    # the figures: the truth labels enter only here
    vae.plot_latent_map(study["signal"], tmp_path / "map.png", labels=labels, title="test")
    vae.plot_marginals(grid, study["band"], {"signal": study["signal"]["marginals"]}, tmp_path / "marginals.png",
                       sr=SR, deviations=study["deviations"]["signal"])
    assert (tmp_path / "map.png").stat().st_size > 0 and (tmp_path / "marginals.png").stat().st_size > 0
