"""Seeds: one derivation for every model of every branch, and no two models of a study sharing one."""

import ast
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from resonant import seeds
from resonant.config import load_config

ROOT = Path(__file__).resolve().parents[1]

# computed once (resonant.seeds as first written); a change means every model of every study changes its seed
LITERALS = {
    ("study-set", "lhco-analogue", 200, 0, "reference", "idealised"): 1618506446,
    (7, "member", 2, 1): 405353411,
    ("contrastive-encoder", "ID", 0): 1517575633,
}


# ---------------------------------------------------------------- derive
def test_derive_is_deterministic_and_stable():
    for keys, value in LITERALS.items():
        assert seeds.derive(*keys) == value
    assert seeds.reference("lhco-analogue", 200, 0, "idealised") == LITERALS[
        ("study-set", "lhco-analogue", 200, 0, "reference", "idealised")]
    assert seeds.encoder("ID", 0) == LITERALS[("contrastive-encoder", "ID", 0)]
    assert seeds.derive(np.int64(7), "member", np.int32(2), 1) == seeds.derive(7, "member", 2, 1)


def test_string_keys_stable_across_processes():
    """No Python hash(): another interpreter with another hash seed derives the same seeds."""
    code = ("from resonant import seeds; "
            "print(seeds.derive('study-set', 'lhco-analogue', 200, 0, 'reference', 'idealised'), "
            "seeds.encoder('ID', 0))")
    for hash_seed in ("1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(ROOT / "src")}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        assert out.stdout.split() == ["1618506446", "1517575633"]


def test_distinct_keys_give_distinct_seeds_in_31_bits():
    # keys that a careless encoding would confuse: order, concatenation, int vs str, leading zeros, nesting
    confusable = [(1, 2), (2, 1), (12,), ("12",), (1, "2"), ("1", 2), ("a", "b"), ("ab",), ("a", "b", 0),
                  ("a", 0, "b"), (0,), (0, 0), (2**32,), (2**32, 0), (1, 0), ("",), ("", "")]
    values = [seeds.derive(*k) for k in confusable]
    assert len(set(values)) == len(values)
    grid = [seeds.derive("s", inj, sd, m, e, f) for inj in (0, 200, 500) for sd in range(10) for m in ("a", "b")
            for e in range(10) for f in range(10)]
    assert len(set(grid)) == len(grid)
    assert all(0 <= v < 2**31 for v in grid + values)  # xgboost, Lightning and Keras take them as they are


def test_derive_rejects_ambiguous_keys():
    for bad in (-1, 1.0, True, None, (1, 2)):
        with pytest.raises((TypeError, ValueError)):
            seeds.derive("x", bad)
    with pytest.raises(ValueError):
        seeds.derive()


def test_child_streams():
    # the former resonant.pointcloud.child_seed, unchanged: the generators' batch noise keeps its streams
    assert seeds.child(5, 3, 1) == int(np.random.SeedSequence([5, 3, 1]).generate_state(1, np.uint64)[0] >> 1)
    kids = [seeds.child(5, b, k) for b in range(50) for k in range(2)]
    assert len(set(kids)) == len(kids) and all(0 <= k < 2**63 for k in kids)


def test_member_seeds():
    assert [seeds.member(9, k) for k in range(3)] == [seeds.derive(9, "member", k) for k in range(3)]
    assert seeds.member(9, 1, 2) != seeds.member(9, 2, 1)
    assert len({seeds.member(b, k) for b in range(20) for k in range(20)}) == 400


# ---------------------------------------------------------------- the catalogue of a config
def _study_set(label):
    return None if label[0] in ("encoder", "encoder checks") else label[:3]


def _role(label):
    """What a model is, whatever its study set: branch, model, member, fold."""
    return label if _study_set(label) is None else label[3:]


def _check_catalogue(cat):
    by_set, by_role = defaultdict(list), defaultdict(list)
    for label, sd in cat.items():
        by_set[_study_set(label)].append(sd)
        by_role[_role(label)].append(sd)
    for what, groups in (("study set", by_set), ("role", by_role)):
        shared = {k: len(v) - len(set(v)) for k, v in groups.items() if len(v) != len(set(v))}
        assert not shared, f"models of one {what} share seeds: {shared}"


@pytest.mark.parametrize("path", ["config.yaml", "tests/configs/tiny.yaml"])
def test_no_two_models_share_a_seed(path):
    cat = seeds.catalogue(load_config(ROOT / path))
    assert not seeds.collisions(cat)
    labels = set(cat)
    cfg = load_config(ROOT / path)
    st = next(iter(cfg["studies"].items()))
    study, inj, sd = st[0], st[1]["injections"][-1], st[1]["seeds"][-1]
    # every branch is there (the configs enable all of them)
    for label in [(study, inj, sd, "idealised", "member", 0), (study, inj, sd, "cathode", "flow"),
                  (study, inj, sd, "cathode", "classifier", 0, 2), (study, inj, sd, "cathode", "fidelity", 0, 2),
                  (study, inj, sd, "contrastive-ID/e0/f0", "sample"), (study, inj, sd, "vae", "member", 0),
                  (study, inj, sd, "contrastive-ID", "combine"), ("encoder", "ID", 0),
                  (study, inj, sd, "flow_matching", "particle_model"), (study, inj, sd, "diffusion", "sample_sr"),
                  (study, inj, sd, "idealised_pointcloud", "classifier", 0)]:
        assert label in labels, label


def test_full_config_seeds_distinct_where_models_share_data():
    """config/full.yaml: ~4e5 seeds. Within every study set, and for every role over all study sets and
    studies (the same model at every injection and seed: their data overlap), no seed is shared. Over the
    whole config, 31-bit hashes give ~40 coincidences between unrelated models (different study sets *and*
    roles): about n^2 / 2^32, which no seed that xgboost takes (32 bits) could avoid."""
    cat = seeds.catalogue(load_config(ROOT / "config" / "full.yaml"))
    assert len(cat) > 400_000
    _check_catalogue(cat)
    n = len(cat)
    assert len(seeds.collisions(cat)) < 3 * n * n / 2**32


def test_old_schemes_would_fail_the_check():
    """The check catches what the issue reported: seed * 1000 + k and the same seed at every injection."""
    old = {("s", inj, sd, "idealised", "member", k): sd * 1000 + k for inj in (0, 200) for sd in (0, 1)
           for k in range(3)}
    with pytest.raises(AssertionError, match="role"):
        _check_catalogue(old)


def test_catalogue_knows_every_method_and_generator():
    from resonant.config import GENERATORS, POINTCLOUD_METHODS

    assert seeds.GENERATORS == GENERATORS
    assert set(POINTCLOUD_METHODS) == {*GENERATORS, seeds.POINTCLOUD_IDEALISED}
    cfg = load_config(ROOT / "config.yaml")
    cfg["methods"]["newmethod"] = {"enabled": True}
    with pytest.raises(ValueError, match="newmethod"):
        seeds.catalogue(cfg)


# ---------------------------------------------------------------- the code paths use these seeds
class _Model:
    history = {"best_iteration": 0, "val_logloss": [0.5]}

    def __init__(self, log, seed):
        log.append(seed)

    def fit(self, *a):
        return self

    def predict(self, x):
        return np.zeros(len(x))


def test_references_members(monkeypatch):
    from resonant import references
    from resonant.models import classifiers

    log = []
    monkeypatch.setattr(classifiers, "make_classifier", lambda settings, seed, **kw: _Model(log, seed))
    xy = (np.zeros((4, 2)), np.array([0, 1, 0, 1]))
    monkeypatch.setattr(references, "training_data", lambda *a: {"train": xy, "val": xy})
    base = seeds.reference("st", 200, 1, "idealised")
    references.train_ensemble("idealised", {}, {"features": [], "n_ensemble": 3}, seed=base)
    cat = seeds.catalogue(_one_study_config())
    assert log == [cat[("st", 200, 1, "idealised", "member", k)] for k in range(3)]


def test_kfold_members_and_folds(monkeypatch):
    from resonant import cathode

    log = []
    monkeypatch.setattr(cathode, "make_classifier", lambda settings, seed, **kw: _Model(log, seed))
    es = seeds.engine("st", 200, 1, "contrastive-ID/e1/f0")
    X = np.random.default_rng(0).normal(size=(30, 2))
    for part in ("classifier", "fidelity"):  # cathode_classify; cathode_fidelity (fidelity_auc passes its seed on)
        cathode.kfold_classify(X, X, {}, {"folds": 3, "n_ensemble": 2}, seed=es[part])
    cat = seeds.catalogue(_one_study_config())
    where = ("st", 200, 1, "contrastive-ID/e1/f0")
    assert log == [cat[(*where, part, e, f)] for part in ("classifier", "fidelity") for e in range(2)
                   for f in range(3)]
    assert len(set(log)) == 12


def test_vae_members_and_characterisation(monkeypatch):
    from resonant import vae

    assert [vae.member_seed(11, k) for k in range(3)] == [seeds.member(11, k) for k in range(3)]
    log = []
    monkeypatch.setattr(vae, "train_val", lambda *a: (np.zeros((2, 2)), np.zeros((2, 2))))

    def train_member(X, Xv, s, seed, name=""):
        log.append(("vae", seed))
        return object(), {}

    monkeypatch.setattr(vae, "train_member", train_member)
    vae.train_ensemble(None, {"n_ensemble": 2}, seed=seeds.vae("st", 200, 1))
    cat = seeds.catalogue(_one_study_config())
    assert [sd for _, sd in log] == [cat[("st", 200, 1, "vae", "member", k)] for k in range(2)]

    # characterisation: every VAE and mass decoder of the study (vae.characterise, stopped after the decoder)
    class Stop(Exception):
        pass

    def decoder(model, table, s, seed, **kw):
        log.append(("mass decoder", seed))
        raise Stop

    def characterise(table, s, seed, *a, **kw):
        with pytest.raises(Stop):
            real_characterise(table, s, seed, *a, **kw)
        return {"mjj_grid": np.zeros(2), "marginals": np.zeros((2, 1))}

    real_characterise = vae.characterise
    monkeypatch.setattr(vae, "fit_mass_decoder", decoder)
    monkeypatch.setattr(vae, "characterise", characterise)
    monkeypatch.setattr(vae, "marginal_band", lambda subsets: {})
    monkeypatch.setattr(vae, "marginal_deviations", lambda *a: {})
    log.clear()
    table = pa.table({"mjj": np.linspace(2500.0, 4500.0, 40)})
    n_sub = vae.settings()["characterisation"]["n_subsets"]
    vae.characterisation_study(table, table, {}, seeds.vae_characterisation("st", 500, 0), (2300.0, 5000.0))
    cfg = _one_study_config(n_subsets=n_sub)
    cat = {k[4:]: v for k, v in seeds.catalogue(cfg).items() if k[:4] == ("st", 500, 0, "vae characterisation")}
    expect = [("data sets", "vae"), ("data sets", "mass decoder")] * 2 + [
        x for i in range(n_sub) for x in (("subset", i, "vae"), ("subset", i, "mass decoder"))]
    assert [sd for _, sd in log] == [cat[k] for k in expect]
    assert len(cat) == 2 + 2 * n_sub and len(set(cat.values())) == len(cat)


def test_pc_classifier_members(monkeypatch):
    pc = pytest.importorskip("resonant.pc_classify")
    assert pc.member_seeds(7, 3) == [seeds.member(7, k) for k in range(3)]
    log = []
    monkeypatch.setattr(pc, "train_classifier", lambda pos, neg, s, seed, **kw: (log.append(seed), {}))
    pc.train_ensemble(None, None, {"n_ensemble": 2}, seed=seeds.pc_classifier("st", 200, 1, "diffusion"))
    cat = seeds.catalogue(_one_study_config())
    assert log == [cat[("st", 200, 1, "diffusion", "classifier", k)] for k in range(2)]


# Every stage that trains or samples a model, the seed function it must call, and the part it takes.
STAGE_SEEDS = {
    "reference": ("reference", None), "cathode_flow": ("engine", "flow"), "cathode_sample": ("engine", "sample"),
    "cathode_classify": ("engine", "classifier"), "cathode_fidelity": ("engine", "fidelity"),
    "contrastive_combine": ("combine", None), "train_contrastive_encoder": ("encoder", None),
    "contrastive_latent": ("encoder_checks", None), "vae_train": ("vae", None),
    "vae_characterise": ("vae_characterisation", None), "train_generator": ("generator", "part"),
    "sample_generator": ("generator", "f-string"), "pc_classify": ("pc_classifier", None),
    "pc_checks": ("pc_fidelity", None),
}


def _seed_calls(tree):
    """(function, subscript) of every ``seeds.<function>(...)[...]`` call in a module."""
    out = set()
    parents = {c: p for p in ast.walk(tree) for c in ast.iter_child_nodes(p)}
    for n in ast.walk(tree):
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and isinstance(n.func.value, ast.Name) \
                and n.func.value.id == "seeds":
            up = parents.get(n)
            key = None
            if isinstance(up, ast.Subscript) and up.value is n:
                s = up.slice
                key = s.value if isinstance(s, ast.Constant) else ("f-string" if isinstance(s, ast.JoinedStr)
                                                                   else getattr(s, "id", "?"))
            out.add((n.func.attr, key))
    return out


def _seedish(node) -> bool:
    """A seed value itself: a name or attribute called *seed*, ``x["seed"]``, or int() of one."""
    if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "int" and node.args:
        return _seedish(node.args[0])
    if isinstance(node, ast.Name):
        return "seed" in node.id.lower()
    if isinstance(node, ast.Attribute):
        return "seed" in node.attr.lower()
    if isinstance(node, ast.Subscript):
        return isinstance(node.slice, ast.Constant) and node.slice.value in ("seed", "model_seed")
    return False


def test_stages_take_their_seeds_from_resonant_seeds():
    for script, (fn, key) in STAGE_SEEDS.items():
        calls = _seed_calls(ast.parse((ROOT / "workflow" / "scripts" / f"{script}.py").read_text()))
        assert (fn, key) in calls, f"{script}.py does not call seeds.{fn}(...)" + (f"[{key!r}]" if key else "")


def test_no_seed_arithmetic_outside_resonant_seeds():
    """seed * 1000 + k and the like are gone: every derivation is a call into resonant.seeds (folding a seed
    into a framework's range, seed % 2**k, is not a derivation). The data generation's Pythia seeds
    (resonant.data) are their own family, derived by resonant.data.generate.chunk_seed."""
    files = [*sorted((ROOT / "workflow" / "scripts").glob("*.py")),
             *(f for f in sorted((ROOT / "src" / "resonant").rglob("*.py"))
               if f.name != "seeds.py" and "data" not in f.relative_to(ROOT / "src" / "resonant").parts[:-1])]
    found = []
    for f in files:
        for n in ast.walk(ast.parse(f.read_text())):
            if isinstance(n, ast.BinOp) and not isinstance(n.op, ast.Mod) and (_seedish(n.left) or _seedish(n.right)):
                found.append(f"{f.relative_to(ROOT)}:{n.lineno}: {ast.unparse(n)}")
    assert not found, "\n".join(found)


def _one_study_config(n_subsets=2):
    """A small config whose catalogue holds the labels the code-path tests look up."""
    cfg = load_config(ROOT / "tests" / "configs" / "tiny.yaml")
    st = cfg["studies"].pop(next(iter(cfg["studies"])))
    cfg["studies"]["st"] = {**st, "injections": [500, 200], "seeds": [0, 1]}
    m = cfg["methods"]
    m["idealised"]["n_ensemble"] = 3
    m["contrastive"].update(n_encoders=2, n_flows=1)
    m["contrastive"]["classifier"].update(folds=3, n_ensemble=2)
    m["vae"]["n_ensemble"] = 2
    m["vae"]["characterisation"]["n_subsets"] = n_subsets
    cfg["pointcloud"]["classifier"]["n_ensemble"] = 2
    return cfg
