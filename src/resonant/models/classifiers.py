"""One entry point for the binary classifiers: a BDT, an HGB or an MLP from a settings block."""

from __future__ import annotations

from collections.abc import Iterable

from .bdt import BDT, HGB
from .mlp import MLPClassifier

#: the settings keys of each model type (besides ``model``); the seed is an argument of the factory
KEYS = {
    "bdt": ("max_depth", "learning_rate", "n_estimators", "early_stopping", "min_rounds", "subsample"),
    "hgb": ("learning_rate", "n_estimators", "early_stopping", "max_leaf_nodes"),
    "mlp": ("hidden", "layers", "lr", "batch_size", "epochs", "patience", "n_best"),
}
CLASSES = {"bdt": BDT, "hgb": HGB, "mlp": MLPClassifier}


def make_classifier(settings: dict, seed: int, ignore: Iterable[str] = (), n_jobs: int | None = None
                    ) -> BDT | HGB | MLPClassifier:
    """``settings["model"]`` ("bdt", the default, "hgb" or "mlp") with that model's own keys.

    Keys of the other model types are ignored (one block can hold all); any other key
    raises ``ValueError``, except those listed in ``ignore`` (e.g. a caller's
    ``("folds", "n_ensemble")``). Missing keys take the model's defaults.
    """
    kind = settings.get("model", "bdt")
    if kind not in KEYS:
        raise ValueError(f"classifier model {kind!r} is not one of {sorted(KEYS)}")
    own = set(KEYS[kind])
    known = {"model", *(k for keys in KEYS.values() for k in keys), *ignore}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ValueError(f"unknown classifier setting(s) for model {kind!r}: {', '.join(unknown)} "
                         f"(allowed: {', '.join(KEYS[kind])})")
    kwargs = {k: v for k, v in settings.items() if k in own}
    if kind != "mlp":
        kwargs["n_jobs"] = n_jobs  # the MLP follows torch's thread setting
    return CLASSES[kind](seed=seed, **kwargs)


def fit_ensemble(settings: dict, X, y, X_val, y_val, seeds: Iterable[int], ignore: Iterable[str] = (),
                 n_jobs: int | None = None, log=None, name: str = "classifier") -> list:
    """One classifier per seed on the same training and validation sets (the members of an ensemble)."""
    seeds = list(seeds)
    models = []
    for k, seed in enumerate(seeds):
        model = make_classifier(settings, seed=seed, ignore=ignore, n_jobs=n_jobs).fit(X, y, X_val, y_val)
        if log is not None:
            log.info("%s member %d/%d: %d rounds, val logloss %.4f", name, k + 1, len(seeds),
                     model.history["best_iteration"] + 1, min(model.history["val_logloss"]))
        models.append(model)
    return models
