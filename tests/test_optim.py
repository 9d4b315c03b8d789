import pytest
import torch

from pgolf.config import ModelConfig, OptimConfig
from pgolf.model import GPT
from pgolf.optim import Muon, assign_params, build_optimizers, newton_schulz, param_table


@pytest.mark.parametrize("shape", [(64, 64), (32, 96), (96, 32), (512, 1536)])
def test_newton_schulz_is_near_orthogonal(shape):
    torch.manual_seed(0)
    G = torch.randn(*shape)
    X = newton_schulz(G, steps=5).float()
    s = torch.linalg.svdvals(X)
    # 5 quintic steps push singular values into a band around 1 (about [0.68, 1.15]); only the very smallest
    # singular values of a square Gaussian matrix (near 0 relative to the norm) stay below it.
    assert s.max() < 1.2
    assert (s > 0.6).float().mean() >= (0.9 if shape[0] == shape[1] else 1.0)


def test_newton_schulz_keeps_singular_vectors():
    torch.manual_seed(1)
    U, _ = torch.linalg.qr(torch.randn(48, 48))
    V, _ = torch.linalg.qr(torch.randn(48, 48))
    G = U @ torch.diag(torch.linspace(0.1, 10, 48)) @ V.T
    X = newton_schulz(G, steps=10).float()
    assert torch.dist(X, U @ V.T) / 48 ** 0.5 < 0.2


ALL_SWITCHES = dict(smear_gate=True, bigram_buckets=64, tie_embeddings=False, xsa_last_n=1, ortho_init=True)


@pytest.mark.parametrize("kw", [{}, ALL_SWITCHES, dict(unet_skips=False)])
def test_table_covers_every_parameter_once(kw):
    model = GPT(ModelConfig(vocab_size=128, num_layers=3, model_dim=64, num_heads=4, num_kv_heads=2, **kw))
    groups = assign_params(model, param_table(OptimConfig(), model.cfg.tie_embeddings))
    names = [n for g in groups.values() for n, _ in g]
    assert sorted(names) == sorted(n for n, _ in model.named_parameters())
    matrix = {n for n, _ in groups["matrix"]}
    assert "blocks.0.attn.c_q.weight" in matrix and "blocks.2.mlp.proj.weight" in matrix
    assert not any("resid_mix" in n or "skip_weights" in n or "q_gain" in n for n in matrix)
    assert [n for n, _ in groups["embed"]] == ["tok_emb.weight"]
    if kw.get("bigram_buckets"):
        assert "bigram.proj.weight" in matrix and [n for n, _ in groups["bigram_table"]] == ["bigram.embed.weight"]
        assert "bigram.scale" in {n for n, _ in groups["scalar"]}


def test_table_rejects_uncovered_parameter():
    model = GPT(ModelConfig(vocab_size=128, num_layers=2, model_dim=64, num_heads=4, num_kv_heads=2))
    model.extra = torch.nn.Parameter(torch.zeros(3, 3))
    table = param_table(OptimConfig(), True)
    with pytest.raises(AssertionError, match="extra"):
        assign_params(model, table)


def test_muon_decoupled_weight_decay_and_update():
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(16, 32))
    p0 = p.detach().clone()
    opt = Muon([p], lr=0.1, momentum=0.0, weight_decay=0.5, nesterov=False)
    opt.zero_grad()
    p.grad.copy_(torch.randn(16, 32))
    expected = p0 * (1 - 0.1 * 0.5) - 0.1 * newton_schulz(p.grad, 5).float()
    opt.step()
    assert torch.allclose(p.detach(), expected, atol=1e-2)


def test_build_optimizers_lr_groups():
    model = GPT(ModelConfig(vocab_size=128, num_layers=2, model_dim=64, num_heads=4, num_kv_heads=2))
    opts = build_optimizers(model, OptimConfig(matrix_lr=0.02, scalar_lr=0.03, tied_embed_lr=0.04), True,
                            torch.device("cpu"))
    lrs = {g["name"]: g["base_lr"] for o in opts.all for g in o.param_groups}
    assert lrs == {"embed": 0.04, "scalar": 0.03, "matrix": 0.02}


def test_newton_schulz_on_a_stack_equals_one_at_a_time():
    torch.manual_seed(2)
    for shape in [(5, 32, 96), (3, 96, 32), (4, 48, 48)]:
        G = torch.randn(*shape) * torch.tensor([0.01, 1.0, 30.0, 2.0, 0.5])[: shape[0], None, None]
        stacked = newton_schulz(G).float()
        single = torch.stack([newton_schulz(g) for g in G]).float()
        assert stacked.shape == G.shape
        assert (stacked - single).abs().max() < 2e-2  # bf16 rounding; each matrix normalized on its own


def reference_muon_step(params, grads, bufs, lr, momentum, wd, nesterov, coeffs, row_norm, steps=5):
    """Muon in float64, one matrix at a time, as the papers write it (the fast path is checked against this)."""
    from pgolf.optim import COEFFS

    for p, g, buf in zip(params, grads, bufs):
        g = g.double()
        buf.mul_(momentum).add_(g)
        u = g + momentum * buf if nesterov else buf.clone()
        if row_norm:
            u = u / u.norm(dim=-1, keepdim=True).clamp_min(1e-7)
        X = u / (u.norm() + 1e-7)
        t = X.size(0) > X.size(1)
        if t:
            X = X.T
        for i in range(steps):
            a, b, c = COEFFS[coeffs][min(i, 4)]
            A = X @ X.T
            X = a * X + (b * A + c * A @ A) @ X
        if t:
            X = X.T
        X = X * max(1.0, p.size(0) / p.size(1)) ** 0.5
        p.mul_(1 - lr * wd).add_(X, alpha=-lr)


@pytest.mark.parametrize("ns_dtype", [torch.float64, torch.bfloat16])
@pytest.mark.parametrize("nesterov,wd,coeffs,row_norm", [(True, 0.04, "ns5", False), (False, 0.0, "ns5", False),
                                                         (True, 0.04, "polar_express", True)])
def test_muon_matches_a_float64_reference(nesterov, wd, coeffs, row_norm, ns_dtype):
    """Foreach momentum, stacked Newton-Schulz per shape, one flat update buffer: against the float64 per-matrix
    reference over several steps of a real model's matrices (shapes shared by many and shapes of their own). With
    Newton-Schulz in float64 everything else must agree to fp32 rounding; in bf16 (the fast path) to a few %."""
    import functools
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=128, num_layers=3, model_dim=64, num_heads=4, num_kv_heads=2,
                            bigram_buckets=32, mlp_mult=3.0))
    mats = [p for _, p in assign_params(model, param_table(OptimConfig(), True))["matrix"]]
    fast = [torch.nn.Parameter(p.detach().clone()) for p in mats]
    ref = [p.detach().double().clone() for p in mats]
    bufs = [torch.zeros_like(p) for p in ref]
    opt = Muon(fast, lr=0.05, momentum=0.9, weight_decay=wd, nesterov=nesterov, coeffs=coeffs, row_norm=row_norm,
               ns=functools.partial(newton_schulz, dtype=ns_dtype),
               update_dtype=torch.float32 if ns_dtype == torch.float64 else torch.bfloat16)
    assert len({tuple(p.shape) for p in fast}) < len(fast)
    for step in range(4):
        opt.zero_grad()
        grads = [torch.randn_like(p) for p in fast]
        for p, g in zip(fast, grads):
            p.grad.copy_(g)
        opt.step()
        reference_muon_step(ref, grads, bufs, 0.05, 0.9, wd, nesterov, coeffs, row_norm)
    for pf, pr, p0 in zip(fast, ref, mats):
        moved = (pr - p0.double()).abs().max().item()
        assert moved > 0
        tol = 1e-5 if ns_dtype == torch.float64 else 0.05
        assert (pf.double() - pr).abs().max().item() <= tol * moved, tuple(pf.shape)


def test_owners_balance_newton_schulz_flops():
    from pgolf.optim import assign_owners, ns_flops

    shapes = [(512, 512)] * 18 + [(256, 512)] * 18 + [(1536, 512)] * 9 + [(512, 1536)] * 9 + [(512, 128)]
    for world in (2, 4, 8):
        owners = assign_owners(shapes, world)
        load = [sum(ns_flops(s, 5) for s, o in zip(shapes, owners) if o == r) for r in range(world)]
        assert max(load) / min(load) < 1.25, (world, load)
        assert assign_owners(shapes, world) == owners  # the same plan on every rank
