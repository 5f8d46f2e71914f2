"""Every model seed of the workflow, derived in one place.

:func:`derive` maps a tuple of keys (non-negative integers and strings: the
study name, the injection, the study set's seed, the branch, the member, the
fold, ...) to a seed in [0, 2**31): the BLAKE2b hash of a type-tagged,
length-prefixed encoding of the keys, so two different key tuples never give
the same hashed bytes, and strings enter as their UTF-8 bytes (never Python's
``hash()``, which changes from process to process). The result depends on the
keys only: the same in every process, on every machine and with every NumPy
version. (A :class:`numpy.random.SeedSequence` of the same words gives seeds
as good, at ~50 us each instead of ~2 us: too slow for the catalogue of a
published-size config, ~4e5 seeds.) 31 bits is what every consumer takes as
is: xgboost keeps the low 32 bits of its ``random_state`` (2**32 trains like
0), Lightning's ``seed_everything`` refuses seeds >= 2**32 (and then seeds
from the clock), Keras' ``set_random_seed`` is given the seed mod 2**31;
torch and NumPy take any of them.

The functions below the helpers name the seeds of each stage from what its
rule's params carry (study, injection, seed of the study set, branch); the
scripts call them, and :func:`catalogue` lists every seed a config gives by
calling the same functions, so a test can check that no two models share one.

What the seeds guarantee, and what they cannot: seeds are hashes, so two
unrelated models collide with probability 2**-31 per pair. Within one study
set (a few thousand models at the published sizes) and among the models of
one role over all study sets (the same method, member and fold at every
injection and seed: the models whose data overlap) the catalogue of
``config.yaml`` and ``config/full.yaml`` is checked collision-free by
``tests/test_seeds.py``. Over a whole published-size study (~4e5 models:
mostly the contrastive branch's k-fold BDTs, 4 configurations x 20 members x
40 classifiers per study set) about 40 coincidences between unrelated models
are expected from 31 bits alone; xgboost takes 32 bits, so no derivation
independent of the config's sizes can avoid them, and models of different
study sets, roles and data are not correlated by a shared seed.

:func:`child` (63 bits) splits one seed into independent streams inside a
model or a sampling run (per batch, per chunk): NumPy and torch take 63 bits.
"""

from __future__ import annotations

import hashlib
import numbers

import numpy as np

SEED_BITS = 31
_PERSON = b"resonant-seeds"

# The branches whose models the catalogue lists (rules/*.smk).
REFERENCES = ("supervised", "idealised")
GENERATORS = ("flow_matching", "diffusion")  # the same as resonant.config.GENERATORS (a test checks)
GENERATOR_PARTS = ("jet_model", "particle_model")
POINTCLOUD_IDEALISED = "idealised_pointcloud"
SAMPLING_REGIONS = ("sr", "sb")
# Methods that train no model of their own: vae_latent scores with the vae method's members.
NO_MODELS = ("vae_latent",)


def _encode(key) -> bytes:
    """The bytes of one key: a type tag, the length of the value, the value."""
    if isinstance(key, (bool, np.bool_)):
        raise TypeError(f"seed key {key!r}: a bool is ambiguous, give an int or a str")
    if isinstance(key, numbers.Integral):
        k = int(key)
        if k < 0:
            raise ValueError(f"seed key {k}: integer keys must be >= 0")
        tag, value = b"i", str(k).encode("ascii")
    elif isinstance(key, str):
        tag, value = b"s", key.encode("utf-8")
    else:
        raise TypeError(f"seed key {key!r} ({type(key).__name__}): give an int >= 0 or a str")
    return tag + len(value).to_bytes(4, "little") + value


def derive(*keys) -> int:
    """A seed in [0, 2**31) from ``keys`` (ints >= 0 and strs): the same keys give the same seed in every
    process and on every machine; distinct keys give independent seeds."""
    if not keys:
        raise ValueError("derive() needs at least one key")
    h = hashlib.blake2b(b"".join(map(_encode, keys)), digest_size=8, person=_PERSON).digest()
    return int.from_bytes(h, "little") >> (64 - SEED_BITS)


def child(seed: int, *keys: int) -> int:
    """A 63-bit seed of the stream ``keys`` (integers) of ``seed``: per batch or chunk inside one model or
    sampling run (NumPy generators, torch.manual_seed). Not for xgboost or Lightning (31 bits: :func:`derive`)."""
    return int(np.random.SeedSequence([int(seed), *map(int, keys)]).generate_state(1, np.uint64)[0] >> 1)


def member(base: int, *index: int) -> int:
    """The seed of ensemble member ``index`` (e.g. ``k``, or ``(member, fold)`` of k-fold classifiers) of the
    ensemble whose seed is ``base``."""
    return derive(base, "member", *index)


# ---------------------------------------------------------------- the stages' seeds
def model(study: str, injection: int, seed: int, *keys) -> int:
    """The seed of a model of the study set (``study``, ``injection``, ``seed``); ``keys`` name the branch and
    the model (e.g. "cathode", "flow")."""
    return derive("study-set", str(study), int(injection), int(seed), *keys)


def reference(study, injection, seed, method: str) -> int:
    """The ensemble seed of a reference (supervised, idealised); member k: ``member(base, k)``."""
    return model(study, injection, seed, "reference", method)


def engine(study, injection, seed, engine: str) -> dict[str, int]:
    """The seeds of one CATHODE-engine run, ``engine`` its name ("cathode", "contrastive-<cfg>/e<E>/f<F>"):
    the flow's training, its sampling, and the ensemble seeds of the k-fold classifiers and of the fidelity
    classifiers (member e, fold f: ``member(base, e, f)``)."""
    return {part: model(study, injection, seed, "engine", engine, part)
            for part in ("flow", "sample", "classifier", "fidelity")}


def combine(study, injection, seed, configuration: str) -> int:
    """The seed of the random grouping of the contrastive members' classifiers into ensembles."""
    return model(study, injection, seed, "contrastive-combine", configuration)


def encoder(configuration: str, index: int) -> int:
    """The seed of contrastive encoder ``index`` of ``configuration`` (trained once, for every study set)."""
    return derive("contrastive-encoder", str(configuration), int(index))


def encoder_checks(configuration: str) -> int:
    """The seed of the latent checks' regressors and classifiers of ``configuration``'s first encoder."""
    return derive("contrastive-latent-checks", str(configuration))


def vae(study, injection, seed) -> int:
    """The ensemble seed of the VAE anomaly score; member k: ``member(base, k)``."""
    return model(study, injection, seed, "vae")


def vae_characterisation(study, injection, seed) -> int:
    """The base seed of the VAE latent characterisation of a study (its largest injection, first seed)."""
    return model(study, injection, seed, "vae-characterisation")


def characterisation_seeds(base: int, n_subsets: int) -> dict[tuple, int]:
    """The VAE and mass-decoder seeds of one characterisation (:func:`resonant.vae.characterisation_study`):
    both full data sets share one seed (so that they differ by their data only); each background subset
    has its own."""
    out = {}
    for name, sd in [("data sets", derive(base, "data sets")),
                     *((("subset", i), derive(base, "subset", i)) for i in range(n_subsets))]:
        name = name if isinstance(name, tuple) else (name,)
        out[(*name, "vae")] = sd
        out[(*name, "mass decoder")] = derive(sd, "mass decoder")
    return out


def generator(study, injection, seed, generator: str) -> dict[str, int]:
    """The seeds of a point-cloud generator of a study set: its jet and particle models' trainings and its
    sampling in the SR and the SB ("sample_sr", "sample_sb")."""
    return {**{part: model(study, injection, seed, "generator", generator, part) for part in GENERATOR_PARTS},
            **{f"sample_{r}": model(study, injection, seed, "generator", generator, "sample", r)
               for r in SAMPLING_REGIONS}}


def pc_classifier(study, injection, seed, method: str) -> int:
    """The ensemble seed of the point-cloud classifier of ``method`` (a generator, or the idealised one)."""
    return model(study, injection, seed, "pc-classifier", method)


def pc_fidelity(study, injection, seed, generator: str, region: str) -> int:
    """The seed of a generator's fidelity check in ``region`` (its split and its classifiers' ensemble)."""
    return model(study, injection, seed, "pc-fidelity", generator, region)


# ---------------------------------------------------------------- the catalogue
def _enabled(config: dict, method: str) -> bool:
    s = config["methods"].get(method)
    return bool(s) and s.get("enabled", True)


def catalogue(config: dict) -> dict[tuple, int]:
    """Every seed the workflow gives for ``config`` (validated, defaults filled in): {label: seed}.

    A label is a tuple naming the model: ("encoder", configuration, index), or (study, injection, seed,
    branch, model, ...) for the models of a study set. Built from the functions the stages call.
    """
    methods = config["methods"]
    known = {*REFERENCES, "cathode", "contrastive", "vae", *GENERATORS, POINTCLOUD_IDEALISED, *NO_MODELS}
    unknown = sorted(set(methods) - known)
    if unknown:
        raise ValueError(f"methods {unknown} are not in the seed catalogue: add their models to "
                         "resonant.seeds.catalogue")
    out: dict[tuple, int] = {}
    c = methods.get("contrastive", {})
    contrastive = list(c.get("configurations", {})) if _enabled(config, "contrastive") else []
    for cfg in contrastive:
        for e in range(c["n_encoders"]):
            out[("encoder", cfg, e)] = encoder(cfg, e)
        out[("encoder checks", cfg)] = encoder_checks(cfg)
    pc = config["pointcloud"]
    generators = [g for g in GENERATORS if _enabled(config, g)]
    pc_methods = generators + ([POINTCLOUD_IDEALISED] if _enabled(config, POINTCLOUD_IDEALISED) else [])
    for study, st in config["studies"].items():
        check_set = (min(st["injections"]), st["seeds"][0])  # the generators' and CATHODE's checks
        for inj in st["injections"]:
            for sd in st["seeds"]:
                where = (study, inj, sd)
                for m in REFERENCES:
                    if _enabled(config, m):
                        base = reference(*where, m)
                        for k in range(methods[m]["n_ensemble"]):
                            out[(*where, m, "member", k)] = member(base, k)
                engines = (["cathode"] if _enabled(config, "cathode") else []) + [
                    f"contrastive-{cfg}/e{e}/f{f}" for cfg in contrastive
                    for e in range(c["n_encoders"]) for f in range(c["n_flows"])]
                for eng in engines:
                    s = methods["cathode"] if eng == "cathode" else c
                    es = engine(*where, eng)
                    out[(*where, eng, "flow")] = es["flow"]
                    out[(*where, eng, "sample")] = es["sample"]
                    for part in ("classifier", "fidelity"):
                        for e in range(s["classifier"]["n_ensemble"]):
                            for f in range(s["classifier"]["folds"]):
                                out[(*where, eng, part, e, f)] = member(es[part], e, f)
                for cfg in contrastive:
                    out[(*where, f"contrastive-{cfg}", "combine")] = combine(*where, cfg)
                if _enabled(config, "vae"):
                    base = vae(*where)
                    for k in range(methods["vae"]["n_ensemble"]):
                        out[(*where, "vae", "member", k)] = member(base, k)
                for g in generators:
                    gs = generator(*where, g)
                    for part in (*GENERATOR_PARTS, "sample_sr") + (("sample_sb",) if (inj, sd) == check_set else ()):
                        out[(*where, g, part)] = gs[part]
                for m in pc_methods:
                    base = pc_classifier(*where, m)
                    for k in range(pc["classifier"]["n_ensemble"]):
                        out[(*where, m, "classifier", k)] = member(base, k)
        check = (study, *check_set)
        n_fid = {**pc["classifier"], **pc["fidelity"]}.get("n_ensemble", 1)
        for g in generators:
            for region in SAMPLING_REGIONS:
                base = pc_fidelity(*check, g, region)
                out[(*check, g, "fidelity", region, "split")] = base
                for k in range(n_fid):
                    out[(*check, g, "fidelity", region, "classifier", k)] = member(base, k)
        if _enabled(config, "vae"):
            where = (study, max(st["injections"]), st["seeds"][0])
            base = vae_characterisation(*where)
            n_sub = methods["vae"]["characterisation"]["n_subsets"]
            for label, sd in characterisation_seeds(base, n_sub).items():
                out[(*where, "vae characterisation", *label)] = sd
    return out


def collisions(seeds: dict[tuple, int]) -> dict[int, list[tuple]]:
    """The seeds that several labels share: {seed: [labels]}."""
    by_seed: dict[int, list[tuple]] = {}
    for label, sd in seeds.items():
        by_seed.setdefault(sd, []).append(label)
    return {sd: labels for sd, labels in by_seed.items() if len(labels) > 1}
