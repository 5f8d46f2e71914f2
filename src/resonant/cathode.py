"""The CATHODE engine, shared by every branch that uses it (classic, contrastive latent).

1. A conditional flow p(x | m_jj) learns the background in the sidebands
   (:class:`resonant.models.flow.ConditionalFlow`).
2. It is sampled at m_jj values drawn in the SR (oversampled).
3. Weakly supervised classifiers separate SR data (label 1) from the samples
   (label 0) with k-fold cross-validation: every data event is scored by models
   that did not train on it, and the test set by the mean of all fold models.
"""

from __future__ import annotations

import logging

import numpy as np

from . import seeds
from .models.classifiers import make_classifier

log = logging.getLogger(__name__)


def kfold_classify(X_data: np.ndarray, X_bkg: np.ndarray, score_sets: dict, settings: dict, seed: int,
                   n_jobs: int | None = None) -> dict:
    """k-fold classifiers (BDT or MLP, ``settings["model"]``) of data (1) vs background model (0).

    ``score_sets`` maps names to feature arrays of events no fold trained on
    (the test set, the sideband data): each is scored by the mean of the fold models.
    Returns {"scores": {name: (n_ensemble, n) array},
             "one_fold": {name: (n_ensemble, n) array}: each event scored by the model of one fold only
                 (assigned at random, balanced, seeded), the construction of the out-of-fold data scores,
             "data_oof", "bkg_oof": (n_ensemble, n) out-of-fold scores of the data and background events,
             "history": per-model histories}.
    For fold k: train on the other folds but fold k+1, stop early on fold k+1.

    Scores to be compared with ``data_oof`` (e.g. a common cut on SR data and
    sidebands) must come from ``one_fold``: the mean of k fold models is a
    smoother function with a narrower score distribution than one model's
    out-of-fold score, so a common top-x% cut would keep a larger fraction of
    the out-of-fold events even when both sets have one distribution.
    """
    k = settings["folds"]
    rng = np.random.default_rng([seed, 11])
    X = np.concatenate([X_data, X_bkg])
    y = np.r_[np.ones(len(X_data)), np.zeros(len(X_bkg))].astype(np.int8)
    fold = np.concatenate([rng.permutation(np.arange(len(X_data)) % k), rng.permutation(np.arange(len(X_bkg)) % k)])
    n_ens = settings["n_ensemble"]
    scores = {name: np.zeros((n_ens, len(x))) for name, x in score_sets.items()}
    one_fold = {name: np.zeros((n_ens, len(x))) for name, x in score_sets.items()}
    assign = {name: np.random.default_rng([seed, 13, i]).permutation(np.arange(len(x)) % k)
              for i, (name, x) in enumerate(score_sets.items())}
    oof = np.zeros((n_ens, len(X)))
    history = []
    for e in range(n_ens):
        for f in range(k):
            val_fold = (f + 1) % k
            tr, va, te = (fold != f) & (fold != val_fold), fold == val_fold, fold == f
            bdt = make_classifier(settings, seed=seeds.member(seed, e, f), ignore=("folds", "n_ensemble"),
                                  n_jobs=n_jobs)
            bdt.fit(X[tr], y[tr], X[va], y[va])
            for name, x in score_sets.items():
                pred = bdt.predict(x)
                scores[name][e] += pred / k
                one_fold[name][e, assign[name] == f] = pred[assign[name] == f]
            oof[e, te] = bdt.predict(X[te])
            history.append({"member": e, "fold": f, **bdt.history})
            log.info("classifier %d/%d fold %d/%d: %d trees", e + 1, n_ens, f + 1, k,
                     bdt.history["best_iteration"] + 1)
    n = len(X_data)
    return {"scores": scores, "one_fold": one_fold, "data_oof": oof[:, :n], "bkg_oof": oof[:, n:], "history": history}


def fidelity_auc(X_true: np.ndarray, X_generated: np.ndarray, settings: dict, seed: int,
                 n_jobs: int | None = None) -> float:
    """Out-of-fold AUC of true (1) vs generated (0) background: 0.5 for a perfect background model."""
    from .metrics import evaluate

    out = kfold_classify(X_true, X_generated, {}, settings, seed, n_jobs=n_jobs)
    d, b = out["data_oof"].mean(0), out["bkg_oof"].mean(0)
    return evaluate(np.r_[np.ones(len(d)), np.zeros(len(b))], np.r_[d, b])["auc"]


def combine_member_scores(tables: list, ensemble_size: int, seed: int, sources=None):
    """One scores table from several members' (each encoder x flow run's k-fold classifiers).

    Every classifier column (``score_k`` of each member) becomes ``score_<m>``;
    they are grouped at random (seeded) into ensembles of ``ensemble_size``
    whose means are ``ensemble_<j>`` (the spread over ensembles measures the
    training uncertainty); ``score`` is the mean over all classifiers.
    """
    import pyarrow as pa

    sources = sources or [f"member {i}" for i in range(len(tables))]
    ref = tables[0]
    ids = ref.column("event_id").to_numpy()
    columns = []
    for t, src in zip(tables, sources):
        if not np.array_equal(t.column("event_id").to_numpy(), ids):
            raise ValueError(f"{src}: its test events differ from {sources[0]}'s; all members must score "
                             "the same test set")
        columns += [t.column(c).to_numpy() for c in t.column_names if c.startswith("score_")]
    if not columns:
        raise ValueError(f"{sources[0]}: no score_<k> columns")
    scores = np.stack(columns)
    order = np.random.default_rng([seed, 23]).permutation(len(scores))
    groups = [order[i:i + ensemble_size] for i in range(0, len(order), ensemble_size)]
    cols = {"event_id": ref.column("event_id"), "label": ref.column("label"), "mjj": ref.column("mjj")}
    for m, s in enumerate(scores):
        cols[f"score_{m}"] = pa.array(s.astype(np.float32))
    for j, g in enumerate(groups):
        cols[f"ensemble_{j}"] = pa.array(scores[g].mean(0).astype(np.float32))
    cols["score"] = pa.array(scores.mean(0).astype(np.float32))
    return pa.table(cols)
