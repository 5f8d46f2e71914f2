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
# the W'-like signal of the laptop study: a heavy (500 GeV) and a light (100 GeV) two-prong jet, tau21 ~ beta(6, 10)
# (mean 0.375) against QCD's beta(6, 3) (mean 0.67). Its small tau21 puts it near the input origin, which the
# untrained networks map to z = 0: nearer the prior's centre than the background, so its KL is the smallest.
WPRIME = {"sig_tau21": True, "sig_tau21_beta": (6.0, 10.0), "sig_masses": (500.0, 100.0)}


def jets_study_set(n_bkg, n_sig, seed, val_fraction=0.25, label=True, sig_mjj=3500.0, sig_tau21=True,
                   bkg_mass_scale=70.0, mass_growth=0.5, tau_concentration=1.0, sig_masses=(500.0, 100.0),
                   sig_tau21_beta=(2.0, 9.0)):
    """A study set (sb + sr together) of jets-like rows: falling m_jj; QCD-like jets, the heavier one's mass
    falling with scale ``bkg_mass_scale``, both growing with m_jj as (m_jj / 3 TeV)^mass_growth; a resonance
    at ``sig_mjj`` decaying to jets of ``sig_masses`` (two-prong, i.e. low tau21 ~ beta(``sig_tau21_beta``), if
    ``sig_tau21``). The N-subjettiness ratios are beta(6c, 3c) with c = ``tau_concentration`` (larger:
    narrower)."""
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
        tau21[n_bkg:] = rng.beta(*sig_tau21_beta, (n_sig, 2))
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


def ensemble(data, s, member_seeds, source="toy"):
    """:func:`vae.train_ensemble` with the members' seeds given: what a test asserts of a training must not
    change when the derivation of the ensemble's seeds (resonant.seeds) does."""
    X, Xv = vae.train_val(data, source)
    return [(*vae.train_member(X, Xv, s, sd, name=f"vae member {k + 1}"), sd) for k, sd in enumerate(member_seeds)]


@pytest.fixture(scope="module")
def easy():
    """An ensemble trained on data with an easy injected signal (3.5%, in the tails of both jet masses) and no
    label column; a labelled test set."""
    data = jets_study_set(7000, 250, seed=1, **TAIL).drop(["label", "event_id"])
    assert "label" not in data.column_names
    members = ensemble(data, FAST, (4000, 4001), source="easy data")
    test = jets_study_set(3000, 300, seed=2, **TAIL)
    return {"data": data, "members": members, "test": test}


def test_kl_score_finds_an_easy_signal_without_labels(easy):
    """Physics: signal events in the low-density tails of the jet masses are encoded far from the bulk of the
    latent distribution and from the prior's centre: the ensemble's mean KL ranks them first (AUC 0.90).

    Only for some initialisations: which end of the latent axis the prior's centre is near depends on them.
    Ensembles of 2 from train_ensemble's seeds 0-5 (resonant.seeds.member) gave AUC 0.99, 0.40, 0.13, 0.25,
    0.53, 0.93 on this signal (the rarity score 0.98, 0.64, 0.98, 0.77, 0.94, 0.90). These members' seeds are
    one of the initialisations where the KL works; the test pins its behaviour there."""
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


# ---------------------------------------------------------------- the W'-like signal: KL fails, rarity finds it
N_WPRIME_TEST = (2000, 500)  # background, signal


@pytest.fixture(scope="module")
def wprime():
    """Per seed (0, 1, 2): an ensemble of 2 trained without labels on 7000 QCD-like events and 150 W'-like ones
    (2%), and a labelled test set; both scores of the test set."""
    out = []
    for seed in range(3):
        data = jets_study_set(7000, 150, seed=10 * seed + 1, **WPRIME).drop(["label", "event_id"])
        models = [m for m, _, _ in ensemble(data, FAST, (100 * seed, 100 * seed + 1), source="wprime data")]
        test = jets_study_set(*N_WPRIME_TEST, seed=10 * seed + 2, **WPRIME)
        X = vae.inputs(test)
        rarities = vae.fit_rarity(models, vae.inputs(data))
        out.append({"models": models, "data": data, "X": X, "y": test.column("label").to_numpy(),
                    "kl": vae.kl_scores(models, X), "rarity": vae.rarity_scores(models, rarities, X)})
    return out


def test_published_kl_score_ranks_the_wprime_signal_below_the_background(wprime):
    """As measured on the laptop data (AUC ~0.08) and here (ensemble AUC 0.04, 0.08, 0.06 for the 3 seeds; a
    member 0.51 once, the others 0.01-0.08): the signal's encodings lie between the background's and the
    prior's centre, so its KL is the smallest. The project never flips a score with the labels: the published
    score stays below 0.5 here."""
    for r in wprime:
        assert evaluate(r["y"], np.mean(r["kl"], axis=0))["auc"] < 0.5


def test_rarity_score_finds_the_wprime_signal_for_each_seed(wprime):
    """The rarity of the encoding separates the W'-like signal for every seed (measured AUC 0.97, 0.97, 0.97;
    members 0.47-0.99; with the latent width too, 0.97, 0.94, 0.98). The bound 0.85: with 500 signal and 2000
    background test events the AUC's standard error is ~0.005 at 0.97 and ~0.013 at chance (Hanley and
    McNeil), so 0.85 is > 25 standard errors above chance and > 20 below the lowest measured value: the
    margin is for the training's variation across platforms (one member of the 3 ensembles came out at 0.47,
    its sibling at 0.99), not for the test set's statistics."""
    for r in wprime:
        ev = evaluate(r["y"], np.mean(r["rarity"], axis=0))
        assert ev["auc"] > 0.85, ev["auc"]
        assert ev["auc"] > evaluate(r["y"], np.mean(r["kl"], axis=0))["auc"] + 0.3


def _flipped(model, path):
    """The same VAE with its latent axis reversed: z -> -z in the encoder's mean head and in the decoder's input."""
    model.save(path)
    flipped = vae.load_member(path)
    head = flipped.encoder.get_layer("encoder_mean")
    head.set_weights([-w for w in head.get_weights()])
    first = flipped.decoder.get_layer("decoder_dense0")
    kernel, bias = first.get_weights()
    first.set_weights([-kernel, bias])
    return flipped


def test_rarity_score_does_not_depend_on_the_orientation_of_a_members_axis(wprime, tmp_path):
    r = wprime[0]
    models = r["models"]
    flipped = [models[0], _flipped(models[1], tmp_path / "m.keras")]
    Xd = vae.inputs(r["data"])
    m_a, lv_a = models[1].encode_numpy(r["X"])
    m_b, lv_b = flipped[1].encode_numpy(r["X"])
    np.testing.assert_allclose(m_b, -m_a, rtol=1e-5, atol=1e-5)  # the axis is reversed
    np.testing.assert_allclose(lv_b, lv_a, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(flipped[1].loss_terms_numpy(r["X"])[0], models[1].loss_terms_numpy(r["X"])[0],
                               rtol=1e-4, atol=1e-7)  # the same reconstruction: the same VAE
    a = vae.rarity_scores(models, vae.fit_rarity(models, Xd), r["X"])
    b = vae.rarity_scores(flipped, vae.fit_rarity(flipped, Xd), r["X"])
    np.testing.assert_allclose(np.mean(b, axis=0), np.mean(a, axis=0), rtol=1e-6, atol=1e-6)


def test_encoding_rarity_is_a_leave_one_out_kernel_density_on_a_common_scale():
    rng = np.random.default_rng(0)
    E = np.c_[rng.normal(3.0, 0.5, 400), rng.normal(-1.0, 2.0, 400)]
    r = vae.EncodingRarity(bandwidth=0.3).fit(E)
    P = rng.normal(0, 1, (50, 2)) * [0.5, 2.0] + [3.0, -1.0]
    Z, Q = (E - r.centre) / r.scale, (P - r.centre) / r.scale  # robustly standardised coordinates

    def neg_log_kde(points, ref, h):
        d2 = ((points[:, None, :] - ref[None, :, :]) ** 2).sum(-1)
        return -np.log(np.exp(-0.5 * d2 / h**2).sum(1) / len(ref) / (2 * np.pi * h**2)) + np.log(r.scale).sum()

    np.testing.assert_allclose(r.raw(P), neg_log_kde(Q, Z, 0.3), rtol=1e-9)
    loo = np.array([neg_log_kde(Z[i:i + 1], np.delete(Z, i, axis=0), 0.3)[0] for i in range(len(Z))])
    common = r.score_fitted()
    np.testing.assert_allclose(common, (loo - np.median(loo)) / r.raw_scale, rtol=1e-9, atol=1e-9)
    assert abs(np.median(common)) < 1e-9  # the common scale: median 0 and robust spread 1 over the data
    assert 1.4826 * np.median(np.abs(common)) == pytest.approx(1.0)
    # no dependence on the offset, scale and orientation of a coordinate
    moved = vae.EncodingRarity(bandwidth=0.3).fit(E * [-4.0, 1.0] + [7.0, 0.0])
    np.testing.assert_allclose(moved.score(P * [-4.0, 1.0] + [7.0, 0.0]), r.score(P), rtol=1e-9, atol=1e-9)
    # a subsample of the data as the reference: every other row, no randomness
    sub = vae.EncodingRarity(n_reference=200).fit(E)
    assert len(sub.reference) == 200 and sub.h == pytest.approx(200 ** (-1 / 6))
    assert np.all(np.isfinite(sub.score_fitted()))


def test_vae_stages_do_not_need_torch():
    """The VAE runs in the TensorFlow environment: nothing it imports may pull in torch or xgboost."""
    code = ("import sys; sys.path.insert(0, 'workflow/scripts'); import vae_train, vae_latent, vae_checks, vae_characterise; "
            "bad = [m for m in ('torch', 'xgboost', 'lightning') if m in sys.modules]; print(bad); "
            "sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _script(name):
    sys.path.insert(0, str(ROOT / "workflow" / "scripts"))
    try:
        return __import__(name)
    finally:
        sys.path.pop(0)


def _write_study_set(d, data, test):
    d.mkdir(parents=True, exist_ok=True)
    mjj = data.column("mjj").to_numpy()
    in_sr = (mjj >= SR[0]) & (mjj < SR[1])
    io.write_table(data.filter(pa.array(~in_sr)), d / "sb.parquet")
    io.write_table(data.filter(pa.array(in_sr)), d / "sr.parquet")
    io.write_table(test, d / "test.parquet")
    return d


SCRIPT_PARAMS = {"epochs": 2, "batch_size": 500, "steps_per_epoch": 5, "n_ensemble": 2, "seed": 3, "study": "s",
                 "injection": 50}


def _train_script(d, out):
    _script("vae_train").main(["--sb", str(d / "sb.parquet"), "--sr", str(d / "sr.parquet"),
                               "--test", str(d / "test.parquet"), "--params", json.dumps(SCRIPT_PARAMS),
                               "--models-dir", str(out / "models"), "--scores", str(out / "scores.parquet")])
    return out


@pytest.fixture(scope="module")
def script_run(tmp_path_factory):
    """A study set on disk (sb, sr, test; labels in every file, as in the workflow) and vae_train's outputs."""
    root = tmp_path_factory.mktemp("vae-scripts")
    d = _write_study_set(root / "set", jets_study_set(1500, 50, seed=5), jets_study_set(300, 30, seed=6).drop(["split"]))
    return d, _train_script(d, root / "vae")


def test_train_script_writes_models_and_scores(script_run):
    _, out = script_run
    assert sorted(p.name for p in (out / "models").iterdir()) == [
        "member_00.json", "member_00.keras", "member_01.json", "member_01.keras"]
    t = io.read_table(out / "scores.parquet")
    assert t.column_names == ["event_id", "label", "mjj", "score_0", "score_1", "score"]
    assert t.num_rows == 330 and np.all(np.isfinite(t.column("score").to_numpy()))
    assert io.table_metadata(out / "scores.parquet")["seed"] == 3


def _shuffle_labels(path, dest, drop=False):
    t = io.read_table(path)
    i = t.schema.get_field_index("label")
    t = t.remove_column(i) if drop else t.set_column(
        i, "label", pa.array(np.random.default_rng(0).permutation(t.column("label").to_numpy())))
    io.write_table(t, dest)


def _latent_script(d, models, scores, prm=None):
    _script("vae_latent").main(["--models-dir", str(models), "--sb", str(d / "sb.parquet"), "--sr",
                                str(d / "sr.parquet"), "--test", str(d / "test.parquet"), "--params",
                                json.dumps({"study": "s", "injection": 50, "seed": 3, **(prm or {})}),
                                "--scores", str(scores)])
    return io.read_table(scores)


def test_latent_script_scores_the_same_members(script_run, tmp_path):
    d, out = script_run
    t = _latent_script(d, out / "models", tmp_path / "scores.parquet")
    assert t.column_names == ["event_id", "label", "mjj", "score_0", "score_1", "score"]
    kl = io.read_table(out / "scores.parquet")
    for c in ("event_id", "label", "mjj"):
        assert t.column(c).equals(kl.column(c))
    member = [t.column(f"score_{k}").to_numpy() for k in range(2)]
    np.testing.assert_allclose(t.column("score").to_numpy(), np.mean(member, axis=0), rtol=1e-5, atol=1e-6)
    assert io.table_metadata(tmp_path / "scores.parquet")["seed"] == 3
    with pytest.raises(ValueError, match="member_NN.keras"):
        _latent_script(d, tmp_path / "no-models", tmp_path / "x.parquet")


def test_no_score_reads_a_label(script_run, tmp_path):
    """Truth picks no direction: both scores are the same when every label of the study set is shuffled, and
    the rarity score when the data have no label column; the test labels are only copied through."""
    d, out = script_run
    for drop in (False, True):
        e = tmp_path / f"drop{int(drop)}"
        e.mkdir()
        for name in ("sb", "sr"):
            _shuffle_labels(d / f"{name}.parquet", e / f"{name}.parquet", drop=drop)
        _shuffle_labels(d / "test.parquet", e / "test.parquet")
        runs = {"latent": (_latent_script(d, out / "models", e / "a.parquet"),
                           _latent_script(e, out / "models", e / "b.parquet"))}
        if not drop:  # the published score: trained again on the shuffled set, with the same seeds
            runs["kl"] = (io.read_table(out / "scores.parquet"),
                          io.read_table(_train_script(e, e / "vae") / "scores.parquet"))
        for a, b in runs.values():
            for c in ("event_id", "mjj", "score_0", "score_1", "score"):
                assert a.column(c).equals(b.column(c)), c
            assert not a.column("label").equals(b.column("label"))


def test_checks_script_writes_diagnostics_and_sculpting(script_run, tmp_path):
    d, out = script_run
    outs = {k: tmp_path / f"{k}.png" for k in ("training", "latent", "kl", "rarity")}
    prm = {"sr": list(SR), "sb": list(SB), "diagnostics_injection": 50, "sculpting_injection": 50, "title": "t"}
    sets = [str(d / "sb.parquet"), str(d / "sr.parquet")]
    _script("vae_checks").main(["--diagnostics-models", str(out / "models"), "--diagnostics-sets", *sets,
                                "--sculpting-models", str(out / "models"), "--sculpting-sets", *sets,
                                "--params", json.dumps(prm), "--training-plot", str(outs["training"]),
                                "--latent-plot", str(outs["latent"]), "--kl-sculpting-plot", str(outs["kl"]),
                                "--sculpting-plot", str(outs["rarity"]), "--summary", str(tmp_path / "c.json")])
    assert all(p.stat().st_size > 1000 for p in outs.values())
    summary = json.loads((tmp_path / "c.json").read_text())
    assert set(summary["sculpting"]) == {"vae", "vae_latent"} and len(summary["members"]) == 2
    for cuts in summary["sculpting"].values():
        assert set(cuts) == {"0.2", "0.05"} and all(set(c["regions"]) == {"sb", "sr"} for c in cuts.values())


def test_latent_score_needs_the_vae(tmp_path):
    """vae_latent scores vae's members: the workflow refuses it without them, naming both keys."""
    import yaml
    from workflow_utils import copy_project, snakemake

    wd = copy_project(tmp_path / "wd")
    cfg = yaml.safe_load((wd / "tests/configs/tiny.yaml").read_text())
    cfg["methods"]["vae"]["enabled"] = False
    (wd / "bad.yaml").write_text(yaml.safe_dump(cfg))
    proc = snakemake(wd, "-n", "--configfile", "bad.yaml", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "methods.vae_latent" in out and "methods.vae.enabled" in out, out[-3000:]
    cfg["methods"]["vae_latent"] = {"enabled": False}
    (wd / "good.yaml").write_text(yaml.safe_dump(cfg))
    proc = snakemake(wd, "-n", "--configfile", "good.yaml")
    assert "vae_train" not in proc.stdout and "vae_latent" not in proc.stdout


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
