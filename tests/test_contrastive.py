"""The contrastive-latent branch: tokens, encoder, losses, sampler, training, DDP, save/load."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pyarrow as pa
import pytest
import torch

from resonant import contrastive as C
from resonant.data.schema import JETS_SCHEMA
from resonant.errors import InputError
from resonant.models.attention import ClassAttentionBlock, SelfAttentionBlock, masked_mean
from resonant.models.encoder import ContrastiveEncoder
from resonant.train.distributed import cluster_from_env
from resonant.train.schedule import lr_factor

from conftest import ROOT, fake_jets

torch.set_num_threads(1)

F = len(C.TOKEN_FEATURES)
ONE_CPU = {"accelerator": "cpu", "devices": 1, "num_nodes": 1, "strategy": "auto"}  # also inside a SLURM job
IDX = {name: i for i, name in enumerate(C.TOKEN_FEATURES)}

# per group: heavy and light jet masses (GeV), the (heavy, light) tau21 pairs it draws from, constituent spread
GROUPS = {"qcd": (150.0, 80.0, [(0.7, 0.7)], 0.3), "sig_a": (150.0, 80.0, [(0.35, 0.35)], 0.3),
          "sig_b": (150.0, 80.0, [(0.35, 0.7), (0.7, 0.35)], 0.3)}


def _constituents(rng, counts, spread):
    off = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    total = int(off[-1])
    # pT fractions sorted (descending) within each jet, as the clustering stage writes them
    raw = rng.exponential(1.0, total)
    jet_of = np.repeat(np.arange(len(counts)), counts)
    raw = raw[np.lexsort((-raw, jet_of))]  # jet_of stays sorted
    pt_rel = raw / np.bincount(jet_of, weights=raw, minlength=len(counts))[jet_of]
    deta = rng.normal(0.0, np.repeat(spread, counts), total)
    dphi = rng.normal(0.0, np.repeat(spread, counts), total)
    values = pa.StructArray.from_arrays([pa.array(v.astype(np.float32)) for v in (pt_rel, deta, dphi)],
                                        names=["pt_rel", "deta", "dphi"])
    return pa.ListArray.from_arrays(pa.array(off), values)


def synthetic_jets(n_per_group: int, seed: int = 0, groups=GROUPS, counts=(1, 30)) -> pa.Table:
    """A jets table with constituents; the groups differ in jet masses, tau21 and constituent spread."""
    rng = np.random.default_rng(seed)
    names = list(groups)
    proc = np.repeat(np.arange(len(names)), n_per_group)
    n = len(proc)
    par = np.array([groups[p][:2] + groups[p][3:] for p in names])[proc]
    pairs = [np.asarray(groups[p][2]) for p in names]
    tau21 = np.array([pairs[g][rng.integers(len(pairs[g]))] for g in proc]).reshape(n, 2)
    m_heavy = par[:, 0] * rng.lognormal(0, 0.15, n)
    m_light = par[:, 1] * rng.lognormal(0, 0.15, n)
    swap = rng.random(n) < 0.5  # j1 (leading in pT) is the heavier jet in half of the events
    cols = {"event_id": np.arange(n, dtype=np.int64), "process": np.array(names, dtype=object)[proc],
            "label": (proc > 0).astype(np.int8), "mjj": rng.uniform(2500, 4500, n)}
    pt1 = rng.uniform(1300, 2000, n)
    pt2 = pt1 * rng.uniform(0.6, 1.0, n)
    for j, m, pt, t21 in (("j1", np.where(swap, m_light, m_heavy), pt1, np.where(swap, tau21[:, 1], tau21[:, 0])),
                          ("j2", np.where(swap, m_heavy, m_light), pt2, np.where(swap, tau21[:, 0], tau21[:, 1]))):
        tau1 = rng.uniform(0.1, 0.5, n)
        tau2 = tau1 * np.clip(t21 + rng.normal(0, 0.08, n), 0.05, 1.0)
        cols.update({f"{j}_pt": pt, f"{j}_eta": rng.uniform(-2, 2, n), f"{j}_phi": rng.uniform(-np.pi, np.pi, n),
                     f"{j}_m": m, f"{j}_tau1": tau1, f"{j}_tau2": tau2,
                     f"{j}_tau3": tau2 * rng.uniform(0.4, 0.9, n)})
        c = rng.integers(counts[0], counts[1] + 1, n)
        cols[f"{j}_n"] = c
        cols[f"{j}_constituents"] = _constituents(rng, c, par[:, 2])
    return pa.table({f.name: pa.array(cols[f.name], f.type) if not isinstance(cols[f.name], pa.Array)
                     else cols[f.name] for f in JETS_SCHEMA}, schema=JETS_SCHEMA)


def group_index(table):
    names = list(GROUPS)
    return np.array([names.index(p) for p in table.column("process").to_pylist()])


# ------------------------------------------------------------------------------------------ tokens

def test_event_tokens_shapes_mask_and_values():
    k = 5
    t = synthetic_jets(40, seed=1, counts=(0, 9))  # jets with 0..9 constituents: some below, some above k
    tokens, mask = C.event_tokens(t, k)
    n = t.num_rows
    assert tokens.shape == (n, 2 + 2 * k, F) and tokens.dtype == np.float32
    assert mask.shape == (n, 2 + 2 * k) and mask.dtype == bool
    c = {name: t.column(name).to_numpy().astype(np.float64) for name in t.schema.names
         if name not in ("process", "j1_constituents", "j2_constituents")}
    heavy_is_1 = c["j1_m"] >= c["j2_m"]
    n_heavy = np.where(heavy_is_1, c["j1_n"], c["j2_n"])
    n_light = np.where(heavy_is_1, c["j2_n"], c["j1_n"])
    assert mask[:, :2].all()
    np.testing.assert_array_equal(mask[:, 2:2 + k].sum(1), np.minimum(n_heavy, k))
    np.testing.assert_array_equal(mask[:, 2 + k:].sum(1), np.minimum(n_light, k))
    assert (n_heavy < k).any() and (n_heavy > k).any() and (n_heavy == 0).any()
    # padded tokens are all zero; flags mark the jet membership and the kind of every real token
    assert not tokens[~mask].any()
    np.testing.assert_array_equal(tokens[:, :, IDX["is_constituent"]], mask * (np.arange(2 + 2 * k) >= 2))
    np.testing.assert_array_equal(tokens[:, 0, IDX["in_heavy_jet"]], 1)
    np.testing.assert_array_equal(tokens[:, 2:2 + k, IDX["in_heavy_jet"]], mask[:, 2:2 + k])
    np.testing.assert_array_equal(tokens[:, 2 + k:, IDX["in_light_jet"]], mask[:, 2 + k:])
    assert not tokens[:, 2:, :len(C.JET_TOKEN_FEATURES)].any()  # jet fields are 0 on constituent tokens
    assert not tokens[:, :2, len(C.JET_TOKEN_FEATURES):-3].any()  # and constituent fields on jet tokens
    # the heavier jet comes first
    m_heavy = np.maximum(c["j1_m"], c["j2_m"])
    np.testing.assert_allclose(tokens[:, 0, IDX["jet_log_m"]], np.log1p(m_heavy), rtol=1e-6)
    np.testing.assert_allclose(tokens[:, 1, IDX["jet_log_m"]], np.log1p(np.minimum(c["j1_m"], c["j2_m"])), rtol=1e-6)
    t1, t2 = (np.where(heavy_is_1, c[f"j1_{f}"], c[f"j2_{f}"]) for f in ("tau1", "tau2"))
    np.testing.assert_allclose(tokens[:, 0, IDX["jet_tau21"]], t2 / (t1 + 1e-5), rtol=1e-5)
    np.testing.assert_allclose(tokens[:, 0, IDX["jet_pt_share"]] + tokens[:, 1, IDX["jet_pt_share"]], 1, rtol=1e-6)
    np.testing.assert_allclose(tokens[:, 0, IDX["jet_log_n"]], np.log1p(n_heavy), rtol=1e-6)
    # constituent tokens: the heavier jet's leading constituents, in order
    heavy_lists = [a if h else b for a, b, h in zip(t.column("j1_constituents").to_pylist(),
                                                    t.column("j2_constituents").to_pylist(), heavy_is_1)]
    for i, parts in enumerate(heavy_lists):
        for s, p in enumerate(parts[:k]):
            tok = tokens[i, 2 + s]
            assert tok[IDX["const_log_pt_rel"]] == pytest.approx(np.log(p["pt_rel"]), rel=1e-5)
            assert tok[IDX["const_deta"]] == pytest.approx(p["deta"], rel=1e-6)
            assert tok[IDX["const_log_dr"]] == pytest.approx(np.log(np.hypot(p["deta"], p["dphi"])), rel=1e-5)


def test_event_tokens_of_a_sliced_chunked_table():
    t = synthetic_jets(30, seed=2)
    whole, _ = C.event_tokens(t, 4)
    chunked = pa.concat_tables([t.slice(0, 17), t.slice(17)])
    part, _ = C.event_tokens(chunked.slice(10, 50), 4)
    np.testing.assert_array_equal(part, whole[10:60])


def test_features_only_table_raises_input_error():
    with pytest.raises(InputError) as e:
        C.event_tokens(fake_jets(50, 5), 8, source="results/data/lhco/jets.parquet")
    assert e.value.field == "j1_constituents"
    assert "results/data/lhco/jets.parquet" in str(e.value)
    assert "this branch needs constituents: use generated data or the LHCO particle file" in str(e.value)


def test_non_finite_input_raises():
    t = synthetic_jets(5, seed=3)
    tau1 = t.column("j1_tau1").to_numpy().copy()
    tau1[2] = np.nan
    bad = t.set_column(t.schema.get_field_index("j1_tau1"), "j1_tau1", pa.array(tau1))
    with pytest.raises(InputError, match="NaN or infinite"):
        C.event_tokens(bad, 4, source="jets.parquet")


def _replace(table, name, values):
    field = table.schema.field(name)
    return table.set_column(table.schema.get_field_index(name), field, pa.array(values, field.type))


def test_tokens_carry_no_absolute_kinematics():
    """Boosting along z (eta shift), rotating in phi, scaling both jets' pT, changing m_jj and relabelling
    j1 <-> j2 -- keeping the jets' masses, substructure and constituents -- leaves the tokens unchanged."""
    t = synthetic_jets(50, seed=4)
    tokens, mask = C.event_tokens(t, 6)
    rng = np.random.default_rng(0)
    n = t.num_rows
    moved = t
    shift, rot, scale = rng.uniform(-1.5, 1.5, n), rng.uniform(-np.pi, np.pi, n), rng.uniform(0.3, 3.0, n)
    for j in ("j1", "j2"):
        moved = _replace(moved, f"{j}_eta", t.column(f"{j}_eta").to_numpy() + shift)
        phi = t.column(f"{j}_phi").to_numpy() + rot
        moved = _replace(moved, f"{j}_phi", (phi + np.pi) % (2 * np.pi) - np.pi)
        moved = _replace(moved, f"{j}_pt", t.column(f"{j}_pt").to_numpy() * scale)
    moved = _replace(moved, "mjj", rng.uniform(1000, 8000, n))
    same_tokens, same_mask = C.event_tokens(moved, 6)
    np.testing.assert_allclose(same_tokens, tokens, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(same_mask, mask)
    # the jet order of the table does not matter either (tokens order jets by mass)
    swapped = t.rename_columns([c.replace("j1_", "jX_").replace("j2_", "j1_").replace("jX_", "j2_")
                                for c in t.schema.names]).select(t.schema.names)
    np.testing.assert_array_equal(C.event_tokens(swapped, 6)[0], tokens)
    # ... whereas the intrinsic properties do change the tokens (the test is not vacuous)
    heavier = _replace(t, "j1_m", t.column("j1_m").to_numpy() * 1.1)
    assert not np.allclose(C.event_tokens(heavier, 6)[0], tokens)
    # and no feature is named after an absolute quantity
    assert not {"mjj", "pt", "eta", "phi", "e", "jet_pt", "jet_eta", "jet_phi", "deta_jj"} & set(C.TOKEN_FEATURES)


def test_token_scaler():
    t = synthetic_jets(200, seed=5)
    tokens, mask = C.event_tokens(t, 8)
    sc = C.TokenScaler().fit(tokens, mask)
    x = sc.transform(tokens, mask)
    jets = mask & (tokens[..., IDX["is_constituent"]] == 0)
    const = mask & (tokens[..., IDX["is_constituent"]] == 1)
    nj, nc = len(C.JET_TOKEN_FEATURES), len(C.CONSTITUENT_TOKEN_FEATURES)
    np.testing.assert_allclose(x[jets][:, :nj].mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(x[jets][:, :nj].std(0), 1, atol=1e-3)
    np.testing.assert_allclose(x[const][:, nj:nj + nc].mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(x[const][:, nj:nj + nc].std(0), 1, atol=1e-3)
    assert not x[~mask].any() and not x[jets][:, nj:nj + nc].any() and not x[const][:, :nj].any()
    np.testing.assert_array_equal(x[..., -3:], tokens[..., -3:])  # flags untouched
    again = C.TokenScaler.from_dict(json.loads(json.dumps(sc.to_dict())))
    np.testing.assert_array_equal(again.transform(tokens, mask), x)


# ------------------------------------------------------------------------------------------ encoder

def _random_tokens(n, t, seed):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randn(n, t, F, generator=g)
    mask = torch.rand(n, t, generator=g) < 0.6
    mask[:, :2] = True
    return tokens, mask


def test_encoder_is_permutation_invariant_and_ignores_padding():
    torch.manual_seed(0)
    model = ContrastiveEncoder(F, latent_dim=6, dim=32, heads=4, particle_blocks=2, class_blocks=2).eval()
    tokens, mask = _random_tokens(16, 12, 1)
    with torch.no_grad():
        mean, logvar = model(tokens, mask)
        assert mean.shape == logvar.shape == (16, 6)
        perm = torch.randperm(12)
        pm, plv = model(tokens[:, perm], mask[:, perm])
        torch.testing.assert_close(pm, mean, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(plv, logvar, atol=1e-5, rtol=1e-5)
        # different permutation per event (e.g. constituents only)
        idx = torch.stack([torch.cat([torch.arange(2), 2 + torch.randperm(10)]) for _ in range(16)])
        em, _ = model(torch.gather(tokens, 1, idx[..., None].expand(-1, -1, F)), torch.gather(mask, 1, idx))
        torch.testing.assert_close(em, mean, atol=1e-5, rtol=1e-5)
        # padded tokens' values do not matter
        noisy = tokens.clone()
        noisy[~mask] = 1e3 * torch.randn(int((~mask).sum()), F)
        nm, nlv = model(noisy, mask)
        torch.testing.assert_close(nm, mean, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(nlv, logvar, atol=1e-5, rtol=1e-5)
        # ... but the valid tokens' values do
        assert not torch.allclose(model(tokens + 0.1 * mask[..., None], mask)[0], mean, atol=1e-4)
    # the same holds in training mode (no fast path in the attention)
    model.train()
    torch.testing.assert_close(model(noisy, mask)[0], model(tokens, mask)[0], atol=1e-5, rtol=1e-5)
    z = model.project(mean)
    assert z.shape == (16, 32)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(16))


def test_attention_blocks_mask():
    torch.manual_seed(1)
    block, cls_block = SelfAttentionBlock(16, 2).eval(), ClassAttentionBlock(16, 2).eval()
    x = torch.randn(4, 7, 16)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0, 0], [1] * 7, [1, 0, 1, 0, 1, 0, 1], [0] * 7], dtype=torch.bool)
    y = block(x, mask)
    assert torch.isfinite(y).all() and not y[~mask].any()  # an event without tokens gives 0, not NaN
    x2 = x.clone()
    x2[~mask] = torch.randn(int((~mask).sum()), 16)
    torch.testing.assert_close(block(x2, mask), y)
    cls = torch.randn(4, 1, 16)
    torch.testing.assert_close(cls_block(cls, x2, mask), cls_block(cls, x, mask))
    torch.testing.assert_close(masked_mean(x, mask)[0], x[0, :3].mean(0))
    assert not masked_mean(x, mask)[3].any()


# ------------------------------------------------------------------------------------------ losses

def _supcon_reference(p, labels, t):
    n = len(p)
    sim = (p @ p.T).double() / t
    losses = []
    for i in range(n):
        pos = [j for j in range(n) if j != i and labels[j] == labels[i]]
        if not pos:
            continue
        den = torch.logsumexp(torch.stack([sim[i, a] for a in range(n) if a != i]), 0)
        losses.append(-sum(sim[i, j] - den for j in pos) / len(pos))
    return torch.stack(losses).mean()


def test_supcon_loss():
    torch.manual_seed(2)
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 3])  # label 3 has no positive: left out of the mean
    p = torch.nn.functional.normalize(torch.randn(9, 5), dim=1)
    torch.testing.assert_close(C.supcon_loss(p, labels, 0.3).double(), _supcon_reference(p, labels, 0.3),
                               rtol=1e-5, atol=1e-6)
    # perfectly clustered projections (one direction per label) beat the same with shuffled labels
    labels = torch.arange(4).repeat_interleave(16)
    centres = torch.eye(8)[:4]
    clustered = torch.nn.functional.normalize(centres[labels] + 0.05 * torch.randn(64, 8), dim=1)
    good = C.supcon_loss(clustered, labels, 0.1)
    shuffled = C.supcon_loss(clustered, labels[torch.randperm(64)], 0.1)
    assert good < 0.5 * shuffled
    assert good > 0  # bounded below by log(positives): never negative
    # no anchor has a positive: zero, and still differentiable
    q = p.clone().requires_grad_(True)
    loss = C.supcon_loss(q, torch.arange(9), 0.1)
    loss.backward()
    assert loss.item() == 0.0 and q.grad is not None


def test_kl_loss():
    assert C.kl_loss(torch.zeros(5, 6), torch.zeros(5, 6)).item() == 0.0
    torch.manual_seed(3)
    mean, logvar = torch.randn(50, 6), torch.randn(50, 6)
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(mean, (0.5 * logvar).exp()),
                                            torch.distributions.Normal(0.0, 1.0)).sum(1).mean()
    torch.testing.assert_close(C.kl_loss(mean, logvar), ref)
    assert C.kl_loss(mean, logvar) > 0


def test_lr_schedule():
    f = [lr_factor(i, 10, 100) for i in range(100)]
    assert f[0] < f[5] < f[9] < f[10] == 1.0  # linear warm-up, then the peak
    assert all(a >= b for a, b in zip(f[10:], f[11:]))  # cosine decay
    assert f[-1] < 0.01 and lr_factor(100, 10, 100) == 0.0


# ------------------------------------------------------------------------------------------ sampler

def test_balanced_batch_sampler():
    groups = np.r_[np.zeros(1000), np.ones(40), np.full(300, 2)].astype(int)
    s = C.BalancedBatchSampler(groups, batch_size=60, seed=7)
    assert len(s) == len(groups) // 60
    batches = list(s)
    assert len(batches) == len(s)
    for b in batches:
        assert len(b) == 60
        np.testing.assert_array_equal(np.bincount(groups[b], minlength=3), [20, 20, 20])
    small = np.concatenate(batches)[groups[np.concatenate(batches)] == 1]
    counts = np.bincount(small, minlength=1040)[1000:1040]
    assert counts.min() >= 1 and counts.max() - counts.min() <= 1  # the small group is evenly oversampled
    large = np.concatenate(batches)[groups[np.concatenate(batches)] == 0]
    assert len(np.unique(large)) == len(large)  # the large group without repeats within an epoch
    # deterministic in (seed, epoch)
    again = C.BalancedBatchSampler(groups, batch_size=60, seed=7)
    assert all(np.array_equal(a, b) for a, b in zip(batches, again))
    s.set_epoch(1)
    assert not all(np.array_equal(a, b) for a, b in zip(batches, s))
    again.set_epoch(1)
    assert all(np.array_equal(a, b) for a, b in zip(s, again))
    assert not all(np.array_equal(a, b) for a, b in zip(batches, C.BalancedBatchSampler(groups, 60, seed=8)))
    # explicit length; too small a batch is an error
    assert len(list(C.BalancedBatchSampler(groups, 60, 7, batches_per_epoch=3))) == 3
    with pytest.raises(ValueError):
        C.BalancedBatchSampler(groups, 5, 7, world_size=2)


def test_balanced_batch_sampler_ddp_slices():
    groups = np.r_[np.zeros(2000), np.ones(500), np.full(700, 2)].astype(int)
    ranks = [C.BalancedBatchSampler(groups, 96, seed=3, rank=r, world_size=4) for r in range(4)]
    for r in ranks:
        r.set_epoch(5)
    assert len({len(r) for r in ranks}) == 1 and ranks[0].batch_size == 96
    glob = ranks[0].global_batches()
    for b, parts in enumerate(zip(*ranks)):
        for p in parts:
            assert len(p) == 24
            np.testing.assert_array_equal(np.bincount(groups[p], minlength=3), [8, 8, 8])
        everything = np.concatenate(parts)
        assert len(np.unique(everything)) == len(everything) == 96  # disjoint slices
        np.testing.assert_array_equal(np.sort(everything), np.sort(glob[b].ravel()))  # = the global batch


# ------------------------------------------------------------------------------------------ training

SMALL = dict(n_constituents=6, dim=32, heads=2, particle_blocks=1, class_blocks=1, proj_dim=16, batch_size=96,
             epochs=8, patience=3, warmup_epochs=1, lr=1e-3, temperature=0.2)


def _split(table, k, seed=0):
    tokens, mask = C.event_tokens(table, k)
    groups = group_index(table)
    idx = np.random.default_rng(seed).permutation(len(groups))
    tr, va, te = np.split(idx, [int(0.6 * len(idx)), int(0.8 * len(idx))])
    scaler = C.TokenScaler().fit(tokens[tr], mask[tr])
    arrays = {name: (tokens[i], mask[i], groups[i]) for name, i in (("train", tr), ("val", va), ("test", te))}
    return arrays, scaler


def _scaled(arrays, scaler):
    tokens, mask, groups = arrays
    return scaler.transform(tokens, mask), mask, groups


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    arrays, scaler = _split(synthetic_jets(600, seed=11), SMALL["n_constituents"])
    work = tmp_path_factory.mktemp("encoder")
    model, history = C.train_encoder(_scaled(arrays["train"], scaler), _scaled(arrays["val"], scaler), SMALL,
                                     seed=3, workdir=work, trainer_kwargs=ONE_CPU)
    return model, scaler, history, arrays, work


def _group_aucs(model, scaler, arrays):
    """Test AUC of each group against the rest, of a logistic regression on the latent."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    z_train = C.encode(model, scaler, *arrays["train"][:2])
    z_test = C.encode(model, scaler, *arrays["test"][:2])
    assert z_test.shape == (len(arrays["test"][0]), 6) and z_test.dtype == np.float32
    proba = LogisticRegression(max_iter=2000).fit(z_train, arrays["train"][2]).predict_proba(z_test)
    return [roc_auc_score(arrays["test"][2] == g, proba[:, g]) for g in range(len(GROUPS))]


def test_training_separates_the_groups(trained):
    model, scaler, history, arrays, work = trained
    assert not model.training
    # measured: 0.995-1.0 for the three groups (3 s of training)
    assert min(_group_aucs(model, scaler, arrays)) > 0.9
    # the same architecture untrained does not (measured worst group 0.46 and 0.65 for seeds 0 and 1):
    # sig_b differs from the others only in how the two jets' tau21 combine
    torch.manual_seed(0)
    assert min(_group_aucs(C.make_encoder(F, SMALL).eval(), scaler, arrays)) < 0.8
    assert len(history["train_loss"]) == len(history["val_loss"]) == history["stopped_epoch"] + 1
    assert history["val_loss"][-1] < history["val_loss"][0]
    assert history["best_epoch"] == int(np.argmin(history["val_loss"]))
    assert history["world_size"] == 1 and history["lr"][0] > history["lr"][-1]
    assert (work / "checkpoints" / "best.ckpt").exists()


def test_the_best_epoch_is_restored(trained):
    model, scaler, history, arrays, work = trained
    ckpt = torch.load(work / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False)
    state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items()}
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_encode_is_deterministic_and_batch_independent(trained):
    model, scaler, _, arrays, _ = trained
    tokens, mask, _ = arrays["test"]
    a = C.encode(model, scaler, tokens, mask)
    np.testing.assert_array_equal(C.encode(model, scaler, tokens, mask), a)
    np.testing.assert_allclose(C.encode(model, scaler, tokens, mask, batch_size=7), a, rtol=1e-5, atol=1e-5)


def test_same_seed_same_weights(tmp_path):
    arrays, scaler = _split(synthetic_jets(60, seed=12), 4)
    settings = dict(SMALL, n_constituents=4, dim=16, epochs=2, batch_size=48)
    runs = [C.train_encoder(_scaled(arrays["train"], scaler), _scaled(arrays["val"], scaler), settings, seed=s,
                            workdir=tmp_path / f"run{i}", trainer_kwargs=ONE_CPU)[0]
            for i, s in enumerate((5, 5, 6))]
    a, b, c = (r.state_dict() for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_save_load_round_trip(trained, tmp_path):
    model, scaler, history, arrays, _ = trained
    path = tmp_path / "out" / "encoder.pt"
    C.save_encoder(path, model, scaler, SMALL, history, list(GROUPS))
    assert path.exists() and not list(path.parent.glob(".*"))  # no temporary files left
    meta_json = json.loads(path.with_suffix(".json").read_text())
    assert meta_json["groups"] == list(GROUPS) and meta_json["settings"]["dim"] == SMALL["dim"]
    assert meta_json["history"]["val_loss"] == history["val_loss"]
    loaded, lscaler, meta = C.load_encoder(path)
    assert meta["groups"] == list(GROUPS) and meta["history"]["best_epoch"] == history["best_epoch"]
    tokens, mask, _ = arrays["test"]
    np.testing.assert_array_equal(C.encode(loaded, lscaler, tokens, mask), C.encode(model, scaler, tokens, mask))
    with pytest.raises(InputError):
        C.load_encoder(tmp_path / "missing.pt")


def test_settings_are_checked():
    assert C.settings_with_defaults({"dim": 8})["latent_dim"] == 6
    with pytest.raises(ValueError, match="unknown contrastive setting"):
        C.settings_with_defaults({"dimension": 8})
    assert set(C.DEFAULTS) >= {"latent_dim", "dim", "heads", "particle_blocks", "class_blocks", "proj_dim",
                               "dropout", "temperature", "beta", "lr", "warmup_epochs", "epochs", "patience",
                               "batch_size"}


def test_cluster_from_env():
    accel = "gpu" if torch.cuda.is_available() else "cpu"
    assert cluster_from_env({}) == {"num_nodes": 1, "devices": 1, "strategy": "auto", "accelerator": accel}
    assert cluster_from_env({"SLURM_STEP_NUM_TASKS": "1", "SLURM_STEP_NUM_NODES": "1"})["devices"] == 1
    # srun started 8 workers on 2 nodes: DDP
    assert cluster_from_env({"SLURM_STEP_NUM_TASKS": "8", "SLURM_STEP_NUM_NODES": "2", "SLURM_NTASKS": "8",
                             "SLURM_JOB_ID": "1"}) == {
        "num_nodes": 2, "devices": 4, "strategy": "ddp", "accelerator": accel}
    # a job of 8 tasks whose command runs once (srun -n 1): one process, no waiting for absent workers
    assert cluster_from_env({"SLURM_NTASKS": "8", "SLURM_NNODES": "2", "SLURM_STEP_NUM_TASKS": "1"})["devices"] == 1


def test_only_the_first_worker_writes():
    from resonant.train.distributed import is_global_zero

    assert is_global_zero({})
    assert is_global_zero({"SLURM_PROCID": "3", "SLURM_STEP_NUM_TASKS": "1"})  # one task of a bigger job
    assert not is_global_zero({"SLURM_PROCID": "1", "SLURM_STEP_NUM_TASKS": "4"})
    assert is_global_zero({"SLURM_PROCID": "0", "SLURM_STEP_NUM_TASKS": "4"})
    assert not is_global_zero({"RANK": "1"})


# ------------------------------------------------------------------------------------------ DDP

DDP_SCRIPT = textwrap.dedent('''
    import json, sys
    from pathlib import Path

    import lightning as L
    import numpy as np
    import torch

    torch.set_num_threads(1)
    from resonant import contrastive as C


    class Record(L.Callback):
        """Each rank's weights before and after training (before the best epoch is restored)."""

        def __init__(self, out):
            self.out = out

        def _save(self, trainer, module, tag):
            state = {k: v.detach().clone() for k, v in module.model.state_dict().items()}
            torch.save(state, self.out / f"{tag}-rank{trainer.global_rank}.pt")

        def on_train_start(self, trainer, module):
            self._save(trainer, module, "initial")

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            with open(self.out / f"batches-rank{trainer.global_rank}.txt", "a") as f:
                f.write(f"{trainer.current_epoch} {batch[0].shape[0]} {float(batch[0].sum()):.6f}\\n")

        def on_train_end(self, trainer, module):
            self._save(trainer, module, "trained")


    def main():
        out = Path(sys.argv[1])
        rng = np.random.default_rng(0)
        n, t, f = 600, 6, len(C.TOKEN_FEATURES)
        groups = rng.integers(0, 2, n)
        tokens = rng.normal(size=(n, t, f)).astype(np.float32)
        tokens[:, :, 0] += groups[:, None]
        mask = np.ones((n, t), bool)
        mask[:, 4:] = rng.random((n, 2)) < 0.5
        tokens[~mask] = 0
        settings = dict(dim=16, heads=2, particle_blocks=1, class_blocks=1, proj_dim=8, batch_size=64, epochs=2,
                        patience=5)
        model, history = C.train_encoder((tokens[:480], mask[:480], groups[:480]),
                                         (tokens[480:], mask[480:], groups[480:]), settings, seed=4,
                                         workdir=out / "work",
                                         trainer_kwargs=dict(accelerator="cpu", devices=2, strategy="ddp",
                                                             num_nodes=1, callbacks=[Record(out)]))
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        torch.save(model.state_dict(), out / f"restored-rank{rank}.pt")
        (out / f"history-rank{rank}.json").write_text(json.dumps(history))


    if __name__ == "__main__":
        main()
''')


def test_ddp_replicas_stay_identical(tmp_path):
    """Two CPU processes (gloo) train on disjoint halves of every batch; their weights stay identical."""
    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "MASTER_", "LOCAL_RANK", "WORLD_"))}
    env.update(PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    proc = subprocess.run([sys.executable, str(script), str(tmp_path)], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for tag in ("trained", "restored"):
        a, b = (torch.load(tmp_path / f"{tag}-rank{r}.pt", weights_only=True) for r in (0, 1))
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (tag, k)
    init = torch.load(tmp_path / "initial-rank0.pt", weights_only=True)
    trained = torch.load(tmp_path / "trained-rank0.pt", weights_only=True)
    assert not all(torch.equal(init[k], trained[k]) for k in init)  # training did happen
    history = json.loads((tmp_path / "history-rank0.json").read_text())
    assert history["world_size"] == 2 and len(history["train_loss"]) == 2
    # the ranks saw different halves of the global batch of 64
    lines = [(tmp_path / f"batches-rank{r}.txt").read_text().split("\n")[:-1] for r in (0, 1)]
    assert len(lines[0]) == len(lines[1]) == 2 * (480 // 64)
    assert all(line.split()[1] == "32" for line in lines[0] + lines[1])
    assert all(a.split()[2] != b.split()[2] for a, b in zip(*lines))
    # Lightning calls the sampler's set_epoch: every epoch draws new batches
    by_epoch = [[line.split()[2] for line in lines[0] if line.split()[0] == e] for e in ("0", "1")]
    assert by_epoch[0] != by_epoch[1]
