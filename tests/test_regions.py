"""Study sets: windows, injection, disjoint splits, the SR m_jj sampler."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from conftest import fake_jets
from resonant.errors import ConfigError, InputError
from resonant.regions import STUDY_SETS, StudySpec, Windows, build_study_sets, check_disjoint, sample_mjj

W = Windows((3300.0, 3700.0), (2300.0, 5000.0))


def spec(**kw):
    base = dict(background=("qcd",), signal="sig", injection=300, seed=0, windows=W)
    base.update(kw)
    return StudySpec(**base)


@pytest.fixture(scope="module")
def jets():
    return fake_jets()


def test_windows():
    m = np.array([2299.0, 2300.0, 3299.9, 3300.0, 3699.9, 3700.0, 4999.0, 5000.0])
    assert W.in_sr(m).tolist() == [0, 0, 0, 1, 1, 0, 0, 0]
    assert W.in_sb(m).tolist() == [0, 1, 1, 0, 0, 1, 1, 0]
    with pytest.raises(ConfigError):
        Windows((2000.0, 2500.0), (2300.0, 5000.0))


def test_sets_are_disjoint_and_in_their_regions(jets):
    sets, summary = build_study_sets(jets, spec())
    check_disjoint(sets)
    ids = np.concatenate([sets[n].column("event_id").to_numpy() for n in STUDY_SETS])
    assert len(np.unique(ids)) == len(ids)
    for name in ("sr", "sr_background", "sr_signal", "test"):
        assert W.in_sr(sets[name].column("mjj").to_numpy()).all(), name
    assert W.in_sb(sets["sb"].column("mjj").to_numpy()).all()
    # the injected signal is split between SR and SB data, and counted right
    n_sig = sum(int(pc.sum(sets[n].column("label")).as_py()) for n in ("sr", "sb"))
    assert n_sig == 300 == summary["signal_injected"]["total"]
    assert summary["signal_injected"]["sr"] == int(pc.sum(sets["sr"].column("label")).as_py())
    assert int(pc.sum(sets["sr_background"].column("label")).as_py()) == 0
    assert set(sets["sr_signal"].column("label").to_pylist()) == {1}
    test_labels = sets["test"].column("label").to_numpy()
    assert 0 < test_labels.mean() < 1


def test_background_shares(jets):
    sets, summary = build_study_sets(jets, spec())
    b_data = summary["sr"]["background"]
    b_ideal = len(sets["sr_background"])
    b_test = summary["test"]["background"]
    assert abs(b_data / (b_data + b_ideal + b_test) - 0.5) < 0.01
    assert abs(b_ideal - b_test) <= 1


def test_test_set_and_background_partition_fixed_across_seeds_and_injections(jets):
    a, _ = build_study_sets(jets, spec(seed=0, injection=100))
    b, _ = build_study_sets(jets, spec(seed=5, injection=500))
    for name in ("test", "sr_background"):
        assert a[name].column("event_id").equals(b[name].column("event_id"))


def test_injections_nested_for_one_seed_and_vary_with_seed(jets):
    def injected(s):
        sets, _ = build_study_sets(jets, s)
        ids = []
        for n in ("sr", "sb"):
            t = sets[n]
            ids.append(t.filter(pc.equal(t.column("label"), 1)).column("event_id").to_numpy())
        return set(np.concatenate(ids).tolist())

    small, big = injected(spec(injection=100)), injected(spec(injection=400))
    assert small < big
    assert injected(spec(injection=100, seed=1)) != small


def test_deterministic(jets):
    a, sa = build_study_sets(jets, spec())
    b, sb = build_study_sets(jets, spec())
    for n in a:
        assert a[n].equals(b[n]), n
    assert sa == sb


def test_splits(jets):
    sets, _ = build_study_sets(jets, spec(val_fraction=0.25))
    for n in ("sb", "sr", "sr_background", "sr_signal"):
        split = np.asarray(sets[n].column("split").to_pylist())
        assert set(split) == {"train", "val"}
        assert abs((split == "val").mean() - 0.25) < 0.01
    assert "split" not in sets["test"].column_names


def test_mjj_samples_follow_sr_data(jets):
    sets, _ = build_study_sets(jets, spec(oversampling=4.0))
    s = sets["sr_mjj"].column("mjj").to_numpy()
    d = sets["sr"].column("mjj").to_numpy()
    assert len(s) == 4 * len(d)
    assert W.in_sr(s).all()
    from scipy.stats import ks_2samp

    assert ks_2samp(s, d).pvalue > 1e-3


def test_sample_mjj_reproduces_a_falling_spectrum():
    rng = np.random.default_rng(1)
    data = 3300 + rng.exponential(150, 20000)
    data = data[data < 3700]
    s = sample_mjj(data, 20000, (3300, 3700), 10.0, seed=3)
    h_d, edges = np.histogram(data, 8, (3300, 3700), density=True)
    h_s, _ = np.histogram(s, edges, density=True)
    assert np.allclose(h_s, h_d, rtol=0.1)
    assert np.array_equal(s, sample_mjj(data, 20000, (3300, 3700), 10.0, seed=3))


def test_too_large_injection_is_a_clear_error(jets):
    with pytest.raises(InputError, match="injection of 5000"):
        build_study_sets(jets, spec(injection=5000), source="jets.parquet")


def test_missing_process_and_empty_sr(jets):
    with pytest.raises(InputError, match="'nosuch'"):
        build_study_sets(jets, spec(signal="nosuch"), source="jets.parquet")
    low = jets.filter(pc.or_(pc.less(jets.column("mjj"), 3300.0), pc.equal(jets.column("label"), 1)))
    with pytest.raises(InputError, match="signal region .* holds no background"):
        build_study_sets(low, spec(), source="jets.parquet")


def test_hash_split_is_stable_and_has_the_fractions():
    from resonant.regions import hash_split

    ids = np.arange(200000, dtype=np.int64) * 7919 + 12345
    parts = hash_split(ids, {"train": 0.6, "val": 0.2, "test": 0.2})
    for name, frac in (("train", 0.6), ("val", 0.2), ("test", 0.2)):
        assert np.mean(parts == name) == pytest.approx(frac, abs=0.005)
    # an event keeps its part whatever else is in the table
    sub = hash_split(ids[::3], {"train": 0.6, "val": 0.2, "test": 0.2})
    assert (sub == parts[::3]).all()
    # fractions below 1 leave the rest unused
    assert np.mean(hash_split(ids, {"a": 0.3}) == "") == pytest.approx(0.7, abs=0.005)


def test_check_disjoint_names_every_overlapping_pair(jets):
    sets, _ = build_study_sets(jets, spec())
    check_disjoint(sets)
    bad = dict(sets)
    bad["test"] = pa.concat_tables([sets["test"], sets["sb"].slice(0, 3).drop(["split"])])
    bad["sr_background"] = pa.concat_tables([sets["sr_background"], sets["sr"].slice(0, 2)])
    with pytest.raises(InputError) as e:
        check_disjoint(bad, source="jets.parquet")
    msg = str(e.value)
    assert msg.startswith("jets.parquet [field 'event_id']")
    assert "sb and test share 3 event(s)" in msg and "sr and sr_background share 2 event(s)" in msg
    assert "sr_signal" not in msg
    twice = dict(sets, sr=pa.concat_tables([sets["sr"], sets["sr"].slice(0, 1)]))
    with pytest.raises(InputError, match="sr holds 1 event_id"):
        check_disjoint(twice)


def _study_sets_stage():
    path = Path(__file__).resolve().parents[1] / "workflow" / "scripts" / "study_sets.py"
    spec_ = importlib.util.spec_from_file_location("study_sets_script", path)
    module = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(module)
    return module.main


STAGE_PARAMS = {"background": ["qcd"], "signal": "sig", "injection": 300, "seed": 0, "sr": [3300.0, 3700.0],
                "sb": [2300.0, 5000.0], "split_seed": 20201, "val_fraction": 0.2, "signal_test_fraction": 0.5,
                "sr_background": {"data": 0.5, "idealised": 0.25, "test": 0.25},
                "mjj_kde": {"bandwidth": 10.0, "oversampling": 4.0}}  # as rules/common.smk's study_params


def test_study_sets_stage_refuses_overlapping_sets_before_writing(jets, tmp_path):
    from resonant import io

    main = _study_sets_stage()
    good, merged_twice = tmp_path / "jets.parquet", tmp_path / "jets-twice.parquet"
    io.write_table(jets, good)
    io.write_table(pa.concat_tables([jets, jets]), merged_twice)  # e.g. a chunk merged twice: every id twice
    params = ["--params", json.dumps(STAGE_PARAMS)]
    main(["--jets", str(good), "--outdir", str(tmp_path / "ok"), *params])
    assert sorted(p.name for p in (tmp_path / "ok").iterdir()) == sorted(
        [f"{n}.parquet" for n in (*STUDY_SETS, "sr_mjj")] + ["summary.json"])
    out = tmp_path / "bad"
    with pytest.raises(InputError) as e:
        main(["--jets", str(merged_twice), "--outdir", str(out), *params])
    msg = str(e.value)
    assert str(merged_twice) in msg and "not disjoint" in msg and "sr and test share" in msg
    assert not out.exists() or not any(out.iterdir())
