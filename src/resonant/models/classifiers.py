"""One entry point for the binary classifiers: a BDT or an MLP from a settings block."""

from __future__ import annotations

from collections.abc import Iterable

from .bdt import BDT
from .mlp import MLPClassifier

#: the settings keys of each model type (besides ``model``); the seed is an argument of the factory
KEYS = {
    "bdt": ("max_depth", "learning_rate", "n_estimators", "early_stopping"),
    "mlp": ("hidden", "layers", "lr", "batch_size", "epochs", "patience", "n_best"),
}
CLASSES = {"bdt": BDT, "mlp": MLPClassifier}


def make_classifier(settings: dict, seed: int, ignore: Iterable[str] = (), n_jobs: int | None = None
                    ) -> BDT | MLPClassifier:
    """``settings["model"]`` ("bdt", the default, or "mlp") with that model's own keys.

    Keys of the other model type are ignored (one block can hold both); any other key
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
    if kind == "bdt":
        kwargs["n_jobs"] = n_jobs  # the MLP follows torch's thread setting
    return CLASSES[kind](seed=seed, **kwargs)
