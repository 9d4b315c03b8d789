"""Each seed technique as a switch: shapes, gradients, the BOS rule, NTK RoPE, QAT under torch.compile, SWA/EMA,
size prediction."""

import pytest
import torch

from pgolf.config import ModelConfig, OptimConfig, QuantConfig, ScheduleConfig
from pgolf.model import GPT, BigramHash, SmearGate, resolve_attention, rotary_cos_sin
from pgolf.predict import model_shapes, predict_bytes, simulated_rows
from pgolf.quant import encode, qat_function, quantize_state, read_artifact, save_artifact

ALL = dict(smear_gate=True, bigram_buckets=64, bigram_dim=16, ortho_init=True, xsa_last_n=2, ln_scale=True,
           activation="leaky_relu2", rope_dims=8, ntk_rope=True, rope_ref_len=16, mlp_mult=3.0)


def cfg(**kw):
    base = dict(vocab_size=96, num_layers=4, model_dim=64, num_heads=4, num_kv_heads=2)
    base.update(kw)
    return ModelConfig(**base)


@pytest.mark.parametrize("kw", [{}, ALL, dict(unet_skips=False, tie_embeddings=False)])
def test_forward_shapes_and_every_parameter_learns(kw):
    torch.manual_seed(0)
    m = GPT(cfg(**kw))
    ids = torch.randint(0, 96, (3, 20))
    ids[:, 7] = 1
    assert m.logits(ids).shape == (3, 20, 96)
    assert m(ids, ids, reduction="none").shape == (3, 20)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    for _ in range(3):  # zero-init projections (and an untied zero-init head) pass gradient on after a step
        opt.zero_grad()
        m(ids, torch.roll(ids, -1, 1)).backward()
        opt.step()
    dead = [n for n, p in m.named_parameters() if p.numel() and (p.grad is None or p.grad.abs().sum() == 0)]
    assert not dead, dead


def test_mlp_width_and_param_count():
    m = GPT(cfg(mlp_mult=3.0))
    assert m.blocks[0].mlp.fc.weight.shape == (192, 64)
    assert GPT(cfg(mlp_hidden=100)).blocks[0].mlp.fc.weight.shape == (100, 64)


def test_smeargate_blends_previous_token_but_not_across_bos():
    torch.manual_seed(0)
    sg = SmearGate(cfg(smear_gate=True, smear_init=0.0))  # g = 0.5
    x = torch.randn(1, 5, 64)
    ids = torch.tensor([[5, 6, 1, 7, 8]])
    y = sg(x, ids)
    assert torch.allclose(y[0, 0], x[0, 0])  # position 0: nothing before it
    assert torch.allclose(y[0, 1], 0.5 * x[0, 1] + 0.5 * x[0, 0])
    assert torch.allclose(y[0, 2], x[0, 2])  # a BOS token never takes the previous document's embedding
    assert torch.allclose(y[0, 3], 0.5 * x[0, 3] + 0.5 * x[0, 2])  # the first token of a doc blends with its BOS


def test_smeargate_output_is_independent_of_the_previous_document():
    torch.manual_seed(0)
    m = GPT(cfg(smear_gate=True, bigram_buckets=64, bigram_dim=16)).eval()
    a = torch.tensor([[9, 10, 11, 1, 20, 21, 22]])
    b = torch.tensor([[30, 31, 32, 1, 20, 21, 22]])
    ea, eb = m.embed(a), m.embed(b)
    assert torch.allclose(ea[0, 3:], eb[0, 3:])  # embeddings from the BOS on do not see the previous document


def test_bigram_hash_buckets():
    bh = BigramHash(cfg(bigram_buckets=64, bigram_dim=16))
    ids = torch.tensor([[5, 6, 1, 7, 7]])
    h = bh.bucket(ids)
    assert h.shape == ids.shape and int(h.max()) < 64 and int(h.min()) >= 0
    assert h[0, 0] == 63 and h[0, 2] == 63  # "no previous token": position 0 and BOS
    assert h[0, 1] == ((36313 * 6) ^ (27191 * 5)) % 63
    assert bh(ids).shape == (1, 5, 64)


def test_ortho_init():
    m = GPT(cfg(ortho_init=True, bigram_buckets=64, bigram_dim=64))
    w = m.blocks[0].attn.c_q.weight
    assert torch.allclose(w @ w.T, torch.eye(64), atol=1e-5)
    assert m.blocks[0].attn.proj.weight.abs().sum() == 0  # zero-init projections stay zero (as the records)
    bp = m.bigram.proj.weight  # a ".proj" that is not zero-init: orthogonal scaled by 1/sqrt(2L)
    assert torch.allclose(bp.T @ bp, torch.eye(64) / (2 * 4), atol=1e-5)


def test_ntk_rope_scales_base_only_beyond_reference():
    c1, s1 = rotary_cos_sin(16, 8, 10000.0, "cpu", ntk_ref_len=16)
    c0, s0 = rotary_cos_sin(16, 8, 10000.0, "cpu")
    assert torch.equal(c1, c0)
    c2, _ = rotary_cos_sin(32, 8, 10000.0, "cpu", ntk_ref_len=16)
    base = 10000.0 * 2 ** (8 / 6)
    inv = 1.0 / base ** (torch.arange(0, 8, 2).float() / 8)
    assert torch.allclose(c2, torch.cos(torch.outer(torch.arange(32).float(), inv)))


@pytest.mark.parametrize("ntk", [False, True])
def test_rotary_table_is_the_per_window_computation(ntk):
    """The model reads RoPE from a table of the training context (``RotaryTable``); every window up to that length
    takes exactly the values computed for it alone (NTK's base too: fixed by the training context), longer ones
    are computed, and the model's loss is the same with the table as without it, bit for bit."""
    torch.manual_seed(0)
    m = GPT(cfg(train_seq_len=12, ntk_rope=ntk, rope_ref_len=8, rope_dims=8))
    assert "rotary.cos" not in m.state_dict()  # derived, never in a checkpoint or the artifact
    for T in (1, 5, 12, 20):
        cos, sin = m.rotary(T, "cpu")
        c, s = rotary_cos_sin(T, 8, 10000.0, "cpu", 8 if ntk else 0, 12)
        assert torch.equal(cos, c) and torch.equal(sin, s), T
    from pgolf.model import apply_precision

    cast = apply_precision(GPT(cfg(train_seq_len=12, ntk_rope=ntk, rope_ref_len=8, rope_dims=8)),
                           torch.device("cuda"))  # the GPU's casts, on the CPU: bf16 model, float32 tables
    c, s = rotary_cos_sin(12, 8, 10000.0, "cpu", 8 if ntk else 0, 12)
    assert cast.tok_emb.weight.dtype == torch.bfloat16 and torch.equal(cast.rotary.cos, c)
    assert torch.equal(cast.rotary.sin, s)
    ids = torch.randint(0, 96, (2, 12))
    with_table = m(ids, ids).item()
    m.rotary.cos = m.rotary.sin = None
    assert m(ids, ids).item() == with_table


def test_xsa_removes_self_value_component():
    torch.manual_seed(0)
    m = GPT(cfg(xsa_last_n=4))
    attn = m.blocks[0].attn
    x = torch.randn(2, 10, 64)
    cos, sin = rotary_cos_sin(10, 16, 10000.0, "cpu")
    seen = {}
    h = attn.proj.register_forward_hook(lambda mod, i, o: seen.__setitem__("y", i[0]))
    attn(x, cos, sin)
    h.remove()
    v = attn.c_v(x).view(2, 10, 2, 16)
    y = seen["y"].view(2, 10, 2, 2, 16)  # (B, T, kv heads, group, D)
    dots = (y * torch.nn.functional.normalize(v, dim=-1).unsqueeze(-2)).sum(-1)
    assert dots.abs().max() < 1e-5


CLIP_MODES = {
    "row max": dict(clip_quantile=1.0),
    "quantile": dict(clip_quantile=0.999),
    "clip search": dict(clip_search=True),
    "pruned": dict(prune_frac=0.05, clip_quantile=0.9995),
    "int8 floor": dict(int8_scale_floor=1 / 127),
    "sdclip": dict(sdclip="attn:13,mlp:11.5,other:12.85,embed:14"),
}


def _qat_model(fmt: str, **quant):
    torch.manual_seed(0)
    m = GPT(cfg(num_layers=2, bigram_buckets=64, bigram_dim=16, tie_embeddings=False))
    with torch.no_grad():
        for p in m.parameters():
            if p.ndim == 2:
                p.normal_(0, 0.05)
    q = QuantConfig(mlp=fmt, attn=fmt, other=fmt, embed="int8", keep_float_max_numel=256, **quant)
    return m, q


@pytest.mark.parametrize("mode", sorted(CLIP_MODES))
@pytest.mark.parametrize("bits", [4, 5, 6, 7, 8])
def test_qat_forward_is_the_exported_model(tmp_path, bits, mode):
    """One quantizer: with QAT on, the forward computes with exactly the weights the artifact gives back (written,
    compressed, read, dequantized), for every bit width and clip mode -- bit for bit."""
    m, q = _qat_model(f"int{bits}", **CLIP_MODES[mode])
    m.set_qat(lambda name: qat_function(name, m.get_parameter(name), q))
    ids = torch.randint(0, 96, (2, 12))
    save_artifact(tmp_path / "a.pgz", quantize_state(m.state_dict(), q, m.cfg.__dict__), q)
    _, state = read_artifact(tmp_path / "a.pgz")
    ref = GPT(m.cfg)
    ref.load_state_dict(state)
    # the embeddings are not CastedLinear (no QAT): give both models the exported ones
    m_sd = dict(m.state_dict(), **{k: state[k] for k in ("tok_emb.weight", "bigram.embed.weight")})
    m.load_state_dict(m_sd)
    m.set_qat_alpha(1.0)
    with torch.no_grad():
        qat = m(ids, ids, reduction="none")
        exported = ref(ids, ids, reduction="none")
    assert torch.equal(qat, exported)
    lin = ["blocks.0.attn.c_q.weight", "blocks.1.mlp.proj.weight", "bigram.proj.weight", "lm_head.weight"]
    for name in lin:  # and the fake-quantized weights themselves
        w = m.get_parameter(name)
        fq = m.get_submodule(name.rsplit(".", 1)[0]).fake_quant
        assert fq is not None and torch.equal(fq(w.detach()), state[name]), name


@pytest.mark.parametrize("backend", ["eager", "compiled"])
def test_qat_switch_fires(backend):
    """The challenge's late QAT never activated: torch.compile folded the flag. Ours is a tensor: flipping it
    changes the compiled forward to the fake-quantized one, and gradients still flow (straight-through)."""
    m, q = _qat_model("int6")
    m.set_qat(lambda name: qat_function(name, m.get_parameter(name), q))
    fwd = torch.compile(m, backend="aot_eager", fullgraph=True) if backend == "compiled" else m
    ids = torch.randint(0, 96, (2, 12))
    off = fwd(ids, ids).item()
    m.set_qat_alpha(1.0)
    on = fwd(ids, ids)
    assert on.item() != pytest.approx(off, abs=1e-6)
    with torch.no_grad():  # the switched-on forward is the fake-quantized model's
        ref = GPT(m.cfg)
        ref.load_state_dict(m.state_dict())
        for name, mod in ref.named_modules():
            if getattr(mod, "weight", None) is not None and isinstance(mod, torch.nn.Linear):
                f = qat_function(name + ".weight", mod.weight, q)
                if f is not None:
                    mod.weight.copy_(f(mod.weight))
        assert on.item() == pytest.approx(ref(ids, ids).item(), rel=1e-6)
    on.backward()
    assert m.blocks[0].mlp.fc.weight.grad.abs().sum() > 0
    m.set_qat_alpha(0.0)
    assert fwd(ids, ids).item() == off


@pytest.mark.parametrize("fmt", ["int5", "int6", "int8"])
def test_size_prediction_within_2_percent(fmt):
    """Prediction from shapes alone vs the real artifact bytes, for weights drawn like the predictor's model."""
    torch.manual_seed(1)
    m = GPT(cfg(num_layers=4, model_dim=256, num_heads=4, num_kv_heads=2, vocab_size=512, mlp_mult=3.0))
    g = torch.Generator().manual_seed(123)
    with torch.no_grad():
        for n, p in m.named_parameters():
            if p.ndim == 2 and p.numel() > 4096:
                p.copy_(simulated_rows(p.shape[0], p.shape[1], g) * 0.02)
    q = QuantConfig(mlp=fmt, attn=fmt, embed="int8", keep_float_max_numel=4096, compressor="lzma", level=9,
                    int8_scale_floor=0.0, clip_quantile=1.0)
    real = len(encode(quantize_state(m.state_dict(), q, m.cfg.__dict__), q))
    pred = predict_bytes(model_shapes(m), q, m.cfg.__dict__, sample_elems=400_000)
    assert abs(pred - real) / real < 0.02, (pred, real)


def test_attention_backend_resolution():
    assert resolve_attention("auto", torch.device("cpu")) == "sdpa"
    assert resolve_attention("sdpa", torch.device("cpu")) == "sdpa"
    with pytest.raises(RuntimeError, match="flash_attn_interface"):
        resolve_attention("fa3", torch.device("cpu"))


def test_swa_and_ema_averaging():
    from pgolf.train import WeightAverager

    lin = torch.nn.Linear(2, 2, bias=False)
    swa = WeightAverager(lin, 0.0)
    vals = [1.0, 2.0, 6.0]
    for v in vals:
        with torch.no_grad():
            lin.weight.fill_(v)
        swa.update()
    swa.apply()
    assert torch.allclose(lin.weight, torch.full((2, 2), 3.0))
    ema = WeightAverager(lin, 0.5)
    for v in vals:
        with torch.no_grad():
            lin.weight.fill_(v)
        ema.update()
    ema.apply()
    assert torch.allclose(lin.weight, torch.full((2, 2), 0.5 * (0.5 * 1 + 0.5 * 2) + 0.5 * 6))


def test_swa_fraction_takes_the_same_count_at_any_budget():
    from pgolf import schedule as S

    s = ScheduleConfig(warmdown_frac=0.5, swa_every_frac=0.05, swa_start_scale=0.5)
    for steps in (500, 5000):
        taken, prev = 0, 0.0
        for step in range(1, steps + 1):
            prog = step / steps
            if S.swa_take(step, S.lr_scale(prog, 0.5), s, prog, prev):
                taken += 1
            prev = prog
        assert taken == 5


# ---------------- the field's later techniques (issue 12) ----------------

def _nonzero(m):
    with torch.no_grad():
        for p in m.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.05)
    return m


def test_recurrence_off_is_the_plain_stack_and_on_reuses_the_span():
    torch.manual_seed(0)
    plain = _nonzero(GPT(cfg(num_layers=5)))
    rec = GPT(cfg(num_layers=5, recur_from=1, recur_to=3, recur_loops=3))
    assert rec.layer_order(True) == [0, 1, 2, 1, 2, 1, 2, 3, 4] and rec.layer_order(False) == [0, 1, 2, 3, 4]
    assert GPT(cfg(num_layers=5, recur_from=1, recur_to=3, recur_loops=1)).layer_order(True) == [0, 1, 2, 3, 4]
    sd = plain.state_dict()
    own = rec.state_dict()
    for k in own:  # the same weights; the looped order's extra skip weights set to 1
        own[k] = sd[k] if k != "skip_weights" else torch.cat([sd[k], torch.ones(own[k].shape[0] - sd[k].shape[0], 64)])
    rec.load_state_dict(own)
    ids = torch.randint(0, 96, (2, 16))
    assert torch.equal(rec(ids, ids, reduction="none"), plain(ids, ids, reduction="none"))  # looped off: plain
    rec.looped = True
    out = rec(ids, ids)
    assert out.item() != pytest.approx(plain(ids, ids).item(), abs=1e-4)
    out.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for n, p in rec.named_parameters() if "blocks.2." in n)
    assert rec.skip_weights.grad[-1].abs().sum() > 0  # the looped order's own skips learn


def test_parallel_block_is_attention_and_mlp_on_one_normed_input():
    torch.manual_seed(0)
    m = _nonzero(GPT(cfg(num_layers=3, parallel_from=1)))
    assert [b.parallel for b in m.blocks] == [False, True, True]
    blk = m.blocks[2]
    x, x0 = torch.randn(2, 8, 64), torch.randn(2, 8, 64)
    from pgolf.model import rotary_cos_sin as rcs

    cos, sin = rcs(8, 16, 10000.0, "cpu")
    mix = blk.resid_mix
    xm = mix[0] * x + mix[1] * x0
    h = torch.nn.functional.rms_norm(xm, (64,))
    want = xm + blk.attn_scale * blk.attn(h, cos, sin) + blk.mlp_scale * blk.mlp(h)
    assert torch.allclose(blk(x, x0, cos, sin), want, atol=1e-6)


def _routed(blk):
    """Set a two-lane block's routing (post [[0.7, -0.2], [0.3, 1.4]], carry-over [1.1, 0.9], resid_mix (0.8, 0.3))
    and return two unequal lanes, x0 and the rotary tables for it."""
    with torch.no_grad():
        blk.lane_post.copy_(torch.tensor([[0.7, -0.2], [0.3, 1.4]]))
        blk.lane_resid.copy_(torch.tensor([1.1, 0.9]))
        blk.resid_mix.copy_(torch.stack((torch.full((64,), 0.8), torch.full((64,), 0.3))))
    cos, sin = rotary_cos_sin(8, 16, 10000.0, "cpu")
    return torch.randn(2, 8, 64), torch.randn(2, 8, 64), torch.randn(2, 8, 64), cos, sin


def test_two_lanes_are_the_gpt_j_stack_when_their_routing_is_plain_and_route_on_their_own_otherwise():
    """model.parallel_lanes=2 (03-31 #1204, 04-27): with every carry-over and write weight at 1, resid_mix at its
    init and no U-Net skips (which feed lane 0 only), both lanes stay equal and the stack is the GPT-J one, bit for
    bit; the records' carry-over 1.1, a skip into lane 0 or any routing weight makes it another model."""
    from pgolf.config import ConfigError
    from pgolf.optim import assign_params, param_table
    from pgolf.config import OptimConfig

    torch.manual_seed(0)
    kw = dict(num_layers=4, parallel_from=1, unet_skips=False)
    one = _nonzero(GPT(cfg(**kw)))
    two = GPT(cfg(**kw, parallel_lanes=2, lane_resid_init=1.0))
    missing = two.load_state_dict(one.state_dict(), strict=False).missing_keys
    assert sorted(missing) == [f"blocks.{i}.lane_{k}" for i in (1, 2, 3) for k in ("post", "resid")]
    ids = torch.randint(0, 96, (2, 12))
    ids[:, 5] = 1
    assert torch.equal(two(ids, ids, reduction="none"), one(ids, ids, reduction="none"))
    with torch.no_grad():
        two.blocks[2].lane_post[1, 0] = 0.0  # the MLP no longer writes into the attention's lane
    assert not torch.equal(two(ids, ids, reduction="none"), one(ids, ids, reduction="none"))
    rec = GPT(cfg(**kw, parallel_lanes=2))  # the records' 1.1
    rec.load_state_dict(one.state_dict(), strict=False)
    assert not torch.equal(rec(ids, ids, reduction="none"), one(ids, ids, reduction="none"))
    skips = dict(kw, unet_skips=True)
    one_s, two_s = _nonzero(GPT(cfg(**skips))), GPT(cfg(**skips, parallel_lanes=2, lane_resid_init=1.0))
    two_s.load_state_dict(one_s.state_dict(), strict=False)
    assert not torch.equal(two_s(ids, ids, reduction="none"), one_s(ids, ids, reduction="none"))

    # the block's rule, by hand, on unequal lanes and routing
    blk = two.blocks[3]
    l0, l1, x0, cos, sin = _routed(blk)
    rms = torch.nn.functional.rms_norm
    a = blk.attn_scale * blk.attn(rms(0.8 * l0 + 0.3 * x0, (64,)), cos, sin)
    m = blk.mlp_scale * blk.mlp(rms(l1, (64,)))
    got0, got1 = blk.forward_lanes((l0, l1), x0, cos, sin)
    assert torch.allclose(got0, 1.1 * l0 + 0.7 * a + 0.3 * m, atol=1e-5)
    assert torch.allclose(got1, 0.9 * l1 - 0.2 * a + 1.4 * m, atol=1e-5)
    # the routing weights are scalars for Adam, never Muon matrices
    groups = assign_params(two, param_table(OptimConfig(), True))
    assert {n for n, _ in groups["scalar"]} >= {"blocks.3.lane_post", "blocks.3.lane_resid"}
    with pytest.raises(ConfigError, match="parallel_lanes"):
        cfg(parallel_lanes=2)
    with pytest.raises(ConfigError, match="parallel_lanes"):
        cfg(parallel_from=1, parallel_lanes=3)


def test_every_compile_turns_inductors_mix_order_reduction_off(monkeypatch):
    """Mix-order reduction crashed torch 2.11's inductor on two lanes (an assertion in its scheduler, session 13's
    H200 run of best-sp8192) and made pr164-s64's step 5% slower (session 14): every compile of a model --
    training, scoring, TTT, one lane or two -- turns it off by an inductor option that exists in this torch."""
    import torch._inductor.config as inductor_config
    from pgolf import evaluate
    from pgolf.model import compile_model

    seen = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: seen.append(kw.get("options")) or fn)
    two = GPT(cfg(num_layers=4, parallel_from=1, parallel_lanes=2))
    one = GPT(cfg(num_layers=4, parallel_from=1))
    assert compile_model(two, False) is two and not seen
    compile_model(two, True)
    compile_model(one, True)
    evaluate._ttt_forward(one, True)
    assert seen == [{"triton.mix_order_reduction": False}] * 3
    assert isinstance(inductor_config.triton.mix_order_reduction, bool)  # the option's key exists in this torch


def test_gated_skips_blend_the_skip_in_by_a_sigmoid_and_saturate_to_no_skip():
    """model.skip_gates (04-01 onward): each U-Net skip enters as lerp(w skip, x, sigmoid(g)) instead of x + w skip;
    a gate saturated open keeps x alone, which is the stack without skips; at init (g = 0) half and half, on either
    stream and on the attention's lane of a two-lane stack. Off, no parameter."""
    torch.manual_seed(0)
    kw = dict(num_layers=4)
    assert GPT(cfg(**kw)).skip_gates is None
    for lanes in ({}, dict(parallel_from=2, parallel_lanes=2)):
        plain = _nonzero(GPT(cfg(**kw, **lanes)))
        gated = GPT(cfg(**kw, **lanes, skip_gates=True))
        assert gated.load_state_dict(plain.state_dict(), strict=False).missing_keys == ["skip_gates"]
        assert gated.skip_gates.shape == plain.skip_weights.shape and not gated.skip_gates.any()
        ids = torch.randint(0, 96, (2, 12))
        out = gated(ids, ids, reduction="none")
        assert not torch.allclose(out, plain(ids, ids, reduction="none"), atol=1e-4)
        none = GPT(cfg(**kw, **lanes, unet_skips=False))
        none.load_state_dict(plain.state_dict(), strict=False)
        with torch.no_grad():
            gated.skip_gates.fill_(float("inf"))  # sigmoid 1: x itself
        assert torch.allclose(gated(ids, ids, reduction="none"), none(ids, ids, reduction="none"), atol=1e-6)
    # the rule by hand on a one-stream stack: 2 encoder, 2 decoder layers, one skip (layer 1 -> layer 2)
    m = _nonzero(GPT(cfg(num_layers=4, skip_gates=True, unet_skips=True)))
    with torch.no_grad():
        m.skip_gates.normal_()
    ids = torch.randint(0, 96, (2, 12))
    x0 = m.embed(ids)
    cos, sin = rotary_cos_sin(12, m.rotary.dims, 10000.0, "cpu")
    x = m.blocks[0](x0, x0, cos, sin)
    h1 = m.blocks[1](x, x0, cos, sin)
    skip1, skip0 = m.skip_weights[0] * h1, m.skip_weights[1] * x
    g = torch.sigmoid(m.skip_gates)
    x = m.blocks[2](g[0] * h1 + (1 - g[0]) * skip1, x0, cos, sin)
    x = m.blocks[3](g[1] * x + (1 - g[1]) * skip0, x0, cos, sin)
    assert torch.allclose(m.hidden(ids), torch.nn.functional.rms_norm(x, (64,)), atol=1e-5)


def test_attention_gate_is_one_at_init_and_scales_heads():
    torch.manual_seed(0)
    base = _nonzero(GPT(cfg(num_layers=2)))
    gated = GPT(cfg(num_layers=2, attn_gate_window=12))
    gated.load_state_dict(base.state_dict(), strict=False)
    ids = torch.randint(0, 96, (2, 10))
    assert torch.equal(gated(ids, ids, reduction="none"), base(ids, ids, reduction="none"))  # W = 0: gate 2*0.5 = 1
    attn = gated.blocks[0].attn
    assert attn.attn_gate.shape == (4, 12)
    with torch.no_grad():
        attn.attn_gate.fill_(0.3)
    x = torch.randn(1, 5, 64)
    cos, sin = rotary_cos_sin(5, 16, 10000.0, "cpu")
    seen = {}
    hook = attn.proj.register_forward_pre_hook(lambda mod, i: seen.__setitem__("y", i[0]))
    attn(x, cos, sin)
    attn.attn_gate.data.zero_()
    attn(x, cos, sin)
    hook.remove()
    g = 2 * torch.sigmoid(x[..., :12].sum(-1) * 0.3)  # (1, 5): the same for every head here
    y1 = seen["y"].view(1, 5, 4, 16)
    attn.attn_gate.data.fill_(0.3)
    attn(x, cos, sin)  # recompute the gated output for comparison
    with torch.no_grad():
        seen2 = {}
        h2 = attn.proj.register_forward_pre_hook(lambda mod, i: seen2.__setitem__("y", i[0]))
        attn(x, cos, sin)
        h2.remove()
    assert torch.allclose(seen2["y"].view(1, 5, 4, 16), y1 * g[..., None, None], atol=1e-5)
    assert "blocks.0.attn.attn_gate" in {n for n, _ in gated.named_parameters()}


def test_smeargate_v2_is_transparent_at_init_and_never_crosses_a_bos():
    torch.manual_seed(0)
    m = GPT(cfg(smear_gate=True, smear_window=12, bigram_buckets=64, bigram_dim=16))
    plain = GPT(cfg(bigram_buckets=64, bigram_dim=16))
    plain.load_state_dict(m.state_dict(), strict=False)
    a = torch.tensor([[9, 10, 11, 1, 20, 21, 22]])
    assert torch.equal(m.embed(a), plain.embed(a))  # lambda = 0: no blend at init
    with torch.no_grad():
        m.smear.smear_lam.fill_(0.7)
        m.smear.smear_w.normal_()
    b = torch.tensor([[30, 31, 32, 1, 20, 21, 22]])
    ea, eb = m.embed(a), m.embed(b)
    assert torch.allclose(ea[0, 3:], eb[0, 3:])  # from the BOS on, nothing of the previous document
    assert not torch.allclose(ea[0, 4], plain.embed(a)[0, 4])  # and it does blend within a document


def test_context_growth_schedule():
    from pgolf import schedule as S
    from pgolf.config import ConfigError, TrainConfig

    s = ScheduleConfig(seq_schedule="0:256,0.3:512,0.7:1024")
    t = TrainConfig(seq_len=1024, micro_batch_tokens=8192, batch_tokens=8192)
    assert [S.seq_len_at(p, s, t) for p in (0.0, 0.29, 0.3, 0.69, 0.9)] == [256, 256, 512, 512, 1024]
    assert S.seq_len_at(0.5, ScheduleConfig(), t) == 1024
    for bad in ("0.1:256", "0:256,0.5:128,0.4:512", "0:x"):
        with pytest.raises(ConfigError):
            ScheduleConfig(seq_schedule=bad)


def test_the_03_31_lanes_are_the_sequential_stack_when_their_routing_is_plain():
    """model.lane_form=0331 (the 2026-03-31 record's two lanes): the MLP reads lane 1 after the attention wrote to
    it, mixed with x0, each sublayer's carry-over applies to both lanes, and the U-Net skips (gated here) join both
    lanes. With every carry-over and write weight at 1 and resid_mix at its init the lanes stay equal and the stack
    is the sequential one, skips included, bit for bit (04-27's lanes give the GPT-J stack and feed skips to lane 0
    only); the block's rule by hand on unequal lanes and routing; the form needs two lanes."""
    from pgolf.config import ConfigError

    torch.manual_seed(0)
    kw = dict(num_layers=6, skip_gates=True)
    seq = _nonzero(GPT(cfg(**kw)))
    two = GPT(cfg(**kw, parallel_from=2, parallel_lanes=2, lane_form="0331", lane_resid_init=1.0))
    missing = two.load_state_dict(seq.state_dict(), strict=False).missing_keys
    assert sorted(missing) == [f"blocks.{i}.lane_{k}" for i in (2, 3, 4, 5) for k in ("post", "resid")]
    ids = torch.randint(0, 96, (2, 12))
    ids[:, 5] = 1
    assert torch.equal(two(ids, ids, reduction="none"), seq(ids, ids, reduction="none"))
    late = GPT(cfg(**kw, parallel_from=2, parallel_lanes=2, lane_resid_init=1.0))  # 04-27's form
    late.load_state_dict(seq.state_dict(), strict=False)
    assert not torch.equal(late(ids, ids, reduction="none"), seq(ids, ids, reduction="none"))
    with torch.no_grad():
        two.blocks[4].lane_post[0, 1] = 0.0  # the attention no longer writes into the MLP's lane
    assert not torch.equal(two(ids, ids, reduction="none"), seq(ids, ids, reduction="none"))

    blk = two.blocks[5]
    l0, l1, x0, cos, sin = _routed(blk)
    rms = torch.nn.functional.rms_norm
    a = blk.attn_scale * blk.attn(rms(0.8 * l0 + 0.3 * x0, (64,)), cos, sin)
    l0a, l1a = 1.1 * l0 + 0.7 * a, 1.1 * l1 - 0.2 * a
    m = blk.mlp_scale * blk.mlp(rms(0.8 * l1a + 0.3 * x0, (64,)))
    got0, got1 = blk.forward_lanes((l0, l1), x0, cos, sin)
    assert torch.allclose(got0, 0.9 * l0a + 0.3 * m, atol=1e-5)
    assert torch.allclose(got1, 0.9 * l1a + 1.4 * m, atol=1e-5)
    with pytest.raises(ConfigError, match="lane_form"):
        cfg(parallel_from=1, lane_form="0331")
    with pytest.raises(ConfigError, match="lane_form"):
        cfg(parallel_from=1, parallel_lanes=2, lane_form="0401")


def test_untied_repeat_mlps_start_as_copies_of_their_layer_and_then_learn_on_their_own():
    """model.recur_untie_mlp (the 03-31 record's REPEAT_UNTIE_MLP=full): each extra pass of a looped layer has its
    own MLP. Unused before the loop, they become copies of their layer's MLP when it starts, so the model is then
    the tied one bit for bit; after that they take gradients of their own pass only, and the weight average of a
    copy restarts from its original's. Their matrices are Muon's and the export's MLP class; the FLOPs count (of the
    plain order) leaves them out as it leaves out tied extra passes."""
    from pgolf.config import ConfigError, OptimConfig
    from pgolf.optim import assign_params, param_table
    from pgolf.quant import storage_group
    from pgolf.train import WeightAverager

    torch.manual_seed(0)
    kw = dict(num_layers=4, recur_from=1, recur_to=3, recur_loops=3, parallel_from=2, parallel_lanes=2)
    tied = _nonzero(GPT(cfg(**kw)))
    untied = GPT(cfg(**kw, recur_untie_mlp=True))
    missing = untied.load_state_dict(tied.state_dict(), strict=False).missing_keys
    reps = [f"blocks.{i}.mlp_repeats.{j}.{k}.weight" for i in (1, 2) for j in (0, 1) for k in ("fc", "proj")]
    assert sorted(missing) == reps
    assert all(untied.get_parameter(n).abs().sum() == 0 for n in reps)
    ids = torch.randint(0, 96, (2, 12))
    assert torch.equal(untied(ids, ids, reduction="none"), tied(ids, ids, reduction="none"))  # not looping yet
    avg = WeightAverager(untied, 0.9)
    avg.update()
    tied.looped = True
    pairs = untied.start_recurrence()
    assert untied.looped and len(pairs) == len(reps)
    assert torch.equal(untied(ids, ids, reduction="none"), tied(ids, ids, reduction="none"))
    avg.copy(pairs)
    at = {id(p): i for i, p in enumerate(avg.params)}
    assert all(torch.equal(avg.avg[at[id(d)]], s.detach()) for d, s in pairs)
    untied(ids, torch.roll(ids, -1, 1)).backward()
    first, second, third = (untied.blocks[1].mlp_of_pass(r).fc.weight.grad for r in (0, 1, 2))
    assert all(g.abs().sum() > 0 for g in (first, second, third))
    assert not torch.equal(first, second) and not torch.equal(second, third)
    with torch.no_grad():
        untied.blocks[2].mlp_repeats[1].proj.weight.mul_(0.5)  # the third pass's MLP of layer 2 is used
    assert not torch.equal(untied(ids, ids, reduction="none"), tied(ids, ids, reduction="none"))
    groups = assign_params(untied, param_table(OptimConfig(), True))
    assert set(reps) <= {n for n, _ in groups["matrix"]}
    assert {storage_group(n) for n in reps} == {"mlp"}
    assert untied.flops_per_token(12) == tied.flops_per_token(12)  # the plain order's, as with tied passes
    with pytest.raises(ConfigError, match="recur_untie_mlp"):
        cfg(num_layers=4, recur_untie_mlp=True)


@pytest.mark.parametrize("lanes", [1, 2])
def test_every_parameter_learns_with_the_later_switches(lanes):
    """... with two lanes too: the looped order 0 1 2 1 2 3 leaves the lanes for the one-stream block 1 (their
    mean) and takes them up again at 2."""
    torch.manual_seed(0)
    m = GPT(cfg(num_layers=4, smear_gate=True, smear_window=12, attn_gate_window=12, parallel_from=2,
                parallel_lanes=lanes, recur_from=1, recur_to=3, recur_loops=2, xsa_last_n=4, rope_dims=8,
                ln_scale=True, activation="leaky_relu2", mlp_mult=4.0, skip_gates=True))
    m.looped = True
    ids = torch.randint(0, 96, (3, 20))
    ids[:, 7] = 1
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        m(ids, torch.roll(ids, -1, 1)).backward()
        opt.step()
    dead = [n for n, p in m.named_parameters() if p.numel() and (p.grad is None or p.grad.abs().sum() == 0)]
    assert not dead, dead


def test_techniques_table_names_real_switches():
    from pgolf.config import Config, apply_overrides
    from pgolf.recipes import get_recipe
    from pgolf.techniques import TECHNIQUES, rows

    for t in TECHNIQUES:  # every switch exists and its "on" value is accepted
        assert bool(t.keys) != bool(t.data), t.name  # a config switch, or a technique of the data: one of the two
        sets = [f"{k}={v}" for k, v in t.keys if v != "num_layers"]
        if any(k == "schedule.seq_schedule" for k, _ in t.keys):  # lengths up to 3072 in the frontier's batch
            sets += ["train.seq_len=3072", "train.batch_tokens=786432", "train.micro_batch_tokens=98304"]
        if any(k == "model.ve_layers" for k, _ in t.keys):  # layers 9-10 of the 03-31 record's 11
            sets.append("model.num_layers=11")
        apply_overrides(Config(), sets)
    r = {x["technique"]: x for x in rows(get_recipe("best-v1"))}
    assert r["XSA on every layer"]["recipe"] == "9" and r["EMA of the weights"]["recipe"] == "0.997"
    caseops = next(x for n, x in r.items() if n.startswith("CaseOps"))  # the data's, in any recipe
    assert caseops["switch"].startswith("data: ") and "--caseops" in caseops["switch"]
    assert (caseops["default"], caseops["recipe"]) == ("-", "(the data's)")
    growth = r["Training-context growth"]  # a config switch whose default and recipe value are empty stays so
    assert (growth["default"], growth["recipe"]) == ("", "")


def test_fused_softcap_cross_entropy_matches_the_plain_loss_in_float64():
    """model.loss_chunk's loss: the mean softcapped cross-entropy and its gradients, computed chunk by chunk inside
    the forward, equal the plain path's (float64: only the summation order differs), with a chunk that does not
    divide the rows."""
    from pgolf.model import SoftcapCrossEntropy

    g = torch.Generator().manual_seed(0)
    h = (torch.randn(37, 16, generator=g, dtype=torch.float64) * 3).requires_grad_()
    w = (torch.randn(50, 16, generator=g, dtype=torch.float64) * 2).requires_grad_()
    y = torch.randint(0, 50, (37,), generator=g)
    cap = 7.0
    plain = torch.nn.functional.cross_entropy(cap * torch.tanh(h @ w.T / cap), y)
    gh, gw = torch.autograd.grad(3.0 * plain, (h, w))
    fused = SoftcapCrossEntropy.apply(h, w, y, cap, 8)
    fh, fw = torch.autograd.grad(3.0 * fused, (h, w))
    assert fused.dtype == torch.float64 and abs(fused.item() - plain.item()) < 1e-12
    assert torch.allclose(fh, gh, rtol=1e-10, atol=1e-14) and torch.allclose(fw, gw, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("tie", [True, False])
def test_model_with_loss_chunk_trains_like_the_plain_path(tie):
    """GPT(loss_chunk=N) gives the plain path's training loss and gradients (float32, CPU: the chunked sums round
    differently, to ~1e-6), for a tied embedding and an untied head; eval (reduction='none') is the same path."""
    torch.manual_seed(0)
    cfg = dict(vocab_size=96, num_layers=2, model_dim=32, num_heads=4, num_kv_heads=2, tie_embeddings=tie)
    a, b = GPT(ModelConfig(**cfg)), GPT(ModelConfig(**cfg, loss_chunk=40))
    with torch.no_grad():
        for p in a.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    b.load_state_dict(a.state_dict())
    x = torch.randint(0, 96, (3, 33))
    y = torch.randint(0, 96, (3, 33))
    la, lb = a(x, y), b(x, y)
    la.backward()
    lb.backward()
    assert abs(la.item() - lb.item()) < 1e-5
    for (n, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.allclose(pa.grad, pb.grad, rtol=1e-4, atol=1e-6), n
    assert torch.equal(a(x, y, reduction="none"), b(x, y, reduction="none"))


DOCS = dict(smear_gate=True, smear_window=12, bigram_buckets=64, bigram_dim=16, xsa_last_n=2, ln_scale=True,
            rope_dims=8, attn_gate_window=8, parallel_from=2, activation="leaky_relu2")


def _doc_model(doc_mask: bool, dtype: torch.dtype = torch.float64) -> GPT:
    torch.manual_seed(0)
    m = GPT(cfg(doc_mask=doc_mask, **DOCS)).to(dtype).eval()
    with torch.no_grad():  # every weight away from its init (zero projections, gates) so each path carries signal
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return m


def test_document_mask_scores_each_document_as_if_it_were_alone():
    """A window holding the end of one document and the start of the next: with model.doc_mask the second's
    logits do not depend on the first at all (bit for bit against another first document of the same length) and
    equal its logits alone (float64 model; only the float32 RoPE tables' rounding differs at other positions);
    without the mask the first document leaks into them -- the checks can fail."""
    a, c = torch.tensor([40, 41, 42, 43, 44, 45, 46]), torch.tensor([60, 61, 62, 63, 64, 65, 66])
    b = torch.tensor([1, 50, 51, 52, 53, 54, 55, 56, 57])  # starts with BOS
    for doc_mask in (True, False):
        m = _doc_model(doc_mask)
        with torch.no_grad():
            ab, cb = m.logits(torch.cat((a, b))[None])[0], m.logits(torch.cat((c, b))[None])[0]
            alone_a, alone_b = m.logits(a[None])[0], m.logits(b[None])[0]
        assert torch.allclose(ab[:len(a)], alone_a, atol=1e-12, rtol=0)  # causal: never changes
        assert torch.equal(ab[len(a):], cb[len(a):]) == doc_mask
        gap = (ab[len(a):] - alone_b).abs().max().item()
        assert (gap < 1e-6) if doc_mask else (gap > 1e-3), (doc_mask, gap)


def test_document_mask_flex_block_mask_equals_the_dense_mask(monkeypatch):
    """The CUDA path's FlexAttention block mask (run here eagerly on the CPU, forward only: flex has no CPU
    backward) gives the dense SDPA mask's attention: several documents per row, a BOS at position 0, none at all
    in a row. Gradients flow through the dense mask (the CPU's and TTT's path)."""
    import warnings

    import pgolf.model as M

    ids = torch.randint(2, 96, (3, 40))
    ids[0, [0, 9, 10, 31]] = 1
    ids[1, [17]] = 1
    m = _doc_model(True)
    m.set_attention_backend("flex")
    dense = m.logits(ids)
    m(ids, torch.roll(ids, -1, 1)).backward()
    monkeypatch.setattr(M, "_flex", lambda backend, n: backend == "flex")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # flex_attention warns when it runs uncompiled
        assert not isinstance(M.document_mask(ids, 1, "flex"), torch.Tensor)  # a BlockMask: the flex path runs
        flex = m.logits(ids)
    assert torch.allclose(flex, dense, atol=1e-10, rtol=0)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())


def test_grouped_heads_copied_or_native_are_one_attention():
    """cuDNN's two forms of grouped K/V heads (copied per query head, or ``enable_gqa`` where ``cudnn_takes_gqa``)
    compute one attention: on the CPU the math kernel runs both forms, and loss and gradients agree bit for bit.
    Without CUDA the probe says no."""
    from pgolf.model import cudnn_takes_gqa

    if not torch.cuda.is_available():
        assert cudnn_takes_gqa() is False
    torch.manual_seed(0)
    m = GPT(cfg(num_heads=4, num_kv_heads=2))
    for p in m.parameters():  # away from the zero-init projections, so every path carries signal
        p.data.add_(0.05 * torch.randn_like(p))
    ids = torch.randint(0, 96, (2, 16))
    out = []
    for native in (False, True):
        m.zero_grad()
        for b in m.blocks:
            b.attn.backend, b.attn.cudnn_gqa = "cudnn", native
        loss = m(ids, torch.roll(ids, -1, 1))
        loss.backward()
        out.append((loss.detach(), [p.grad.clone() for p in m.parameters()]))
    assert torch.equal(out[0][0], out[1][0])
    assert all(torch.equal(a, b) for a, b in zip(out[0][1], out[1][1]))
    m.attn_backend = "cudnn"  # the log names the form that ran
    assert m.attention_label() == "cudnn+gqa"
    m.set_attention_backend("sdpa")
    assert m.attention_label() == "sdpa"


def test_document_mask_attention_choices():
    from pgolf.config import ConfigError

    assert resolve_attention("auto", torch.device("cpu"), doc_mask=True) == "sdpa"
    with pytest.raises(ConfigError, match="doc_mask"):
        cfg(doc_mask=True, attention="cudnn")


def test_document_mask_flex_path_compiles_in_one_graph(monkeypatch):
    """The CUDA path as the training loop runs it -- the block mask built and FlexAttention called inside one
    ``torch.compile(fullgraph=True)`` graph -- here on the CPU (forward only): it traces, and it scores as the dense
    mask does (float32; other kernels, so a tolerance). Forward only, so the rule that keeps flex to gradient-on
    forwards is lifted here."""
    import pgolf.model as M

    monkeypatch.setattr(M, "_flex", lambda backend, n: backend == "flex" and torch.compiler.is_compiling())
    m = _doc_model(True, torch.float32)  # perturbed: at init the zero projections would hide any mask
    ids = torch.randint(2, 96, (2, 128))
    ids[0, [0, 40, 41, 100]] = 1
    ids[1, 70] = 1
    with torch.no_grad():
        dense = m(ids, torch.roll(ids, -1, 1), reduction="none")
        m.set_attention_backend("flex")
        flex = torch.compile(m, dynamic=False, fullgraph=True)(ids, torch.roll(ids, -1, 1), reduction="none")
        m.cfg.doc_mask = False
        causal = m(ids, torch.roll(ids, -1, 1), reduction="none")
    assert torch.allclose(flex, dense, atol=1e-5, rtol=0), (flex - dense).abs().max()
    assert not torch.allclose(causal, dense, atol=1e-3, rtol=0)  # the mask matters to these scores


def test_document_mask_takes_flex_only_in_compiled_calls_up_to_the_measured_limit(monkeypatch):
    """FlexAttention failed on the GPU above 48 windows of 2,048 a call (BENCHMARKS, session 9), and at 48 in the
    no-grad eval forward (session 10): a compiled training forward (gradients on) of up to FLEX_MAX_TOKENS gets the
    block mask; a larger batch, every no-grad forward and every eager forward the dense mask; a CUDA training
    micro-batch above the limit is refused (next test)."""
    import pgolf.model as M

    monkeypatch.setattr(M, "FLEX_MAX_TOKENS", 128)
    small, large = torch.randint(2, 96, (2, 64)), torch.randint(2, 96, (3, 64))
    assert torch.is_tensor(M.document_mask(small, 1, "flex"))  # eager: dense
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert not torch.is_tensor(M.document_mask(small, 1, "flex"))  # a BlockMask
    with torch.inference_mode():
        assert torch.is_tensor(M.document_mask(small, 1, "flex"))
    with torch.no_grad():
        assert torch.is_tensor(M.document_mask(small, 1, "flex"))
    assert torch.is_tensor(M.document_mask(large, 1, "flex"))
    assert torch.is_tensor(M.document_mask(small, 1, "sdpa"))


def test_document_mask_refuses_a_flex_micro_batch_above_the_measured_limit(monkeypatch, tmp_path, capsys):
    import pgolf.model as M
    from pgolf.cli import main

    monkeypatch.setattr(M, "resolve_attention", lambda *a: "flex")  # what a CUDA run resolves with the doc mask
    argv = ["train", "--recipe", "smoke", "--set", "model.doc_mask=true", "--set", "train.seq_len=1024",
            "--set", "train.batch_tokens=131072", "--out", str(tmp_path), "--name", "r"]
    assert main(argv + ["--set", "train.micro_batch_tokens=131072"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train.micro_batch_tokens=131,072" in err[0] and "98,304" in err[0], err


def test_ablation_rows_turn_one_technique_off_each():
    """pgolf techniques --ablate (issue 12's ablation table): a row per technique the recipe has on, each a valid
    config that differs from the recipe; SmearGate v2 off leaves v1 on; TTT's rows are absent from a recipe that
    scores without TTT, recurrence's from a recipe without it; the GPTQ-embedding row leaves GPTQ on; without
    --recipe, exit 2."""
    from pgolf.cli import main
    from pgolf.config import apply_overrides
    from pgolf.recipes import get_recipe
    from pgolf.techniques import ablations

    best = get_recipe("best")
    rows = dict(ablations(best))
    assert rows["SmearGate v2 (gate from 12 dims, BOS-safe)"] == ["model.smear_window=0"]
    assert rows["GPTQ of the tied embedding (head inputs' Hessian; with quant.gptq)"] == ["quant.gptq_embed=False"]
    assert "Depth recurrence" not in rows  # best has it off
    no_ttt = dict(ablations(apply_overrides(best, ["eval.ttt=false", "eval.final=sliding"])))
    assert not any("TTT" in name for name in no_ttt) and any("TTT" in name for name in rows)
    assert "Depth recurrence" in dict(ablations(get_recipe("frontier-sp8192")))
    # a technique is on by its own keys, not by those of one it extends: with one parallel lane, no two-lane row
    # (its parallel_from is the GPT-J row's); a recipe with SmearGate v1 only has no v2 row
    assert not any("Two-lane" in name for name in ablations(apply_overrides(best, ["model.parallel_lanes=1"])))
    assert rows["Two-lane parallel residuals (attention's and MLP's lanes, learned routing)"] == \
        ["model.parallel_lanes=1"]
    assert rows["Parallel attention/MLP (GPT-J lane)"] == ["model.parallel_from=-1", "model.parallel_lanes=1"]
    assert rows["SmearGate v1 (per-dim gate)"] == ["model.smear_gate=False", "model.smear_window=0"]  # no gate
    v1 = dict(ablations(get_recipe("record-0331")))
    assert "SmearGate v1 (per-dim gate)" in v1 and "SmearGate v2 (gate from 12 dims, BOS-safe)" not in v1
    for name, sets in rows.items():
        assert apply_overrides(best, sets).to_dict() != best.to_dict(), name
    assert rows["Phased score-first TTT (global SGD on scored docs)"] == ["eval.ttt_phases=0"]
    assert main(["techniques", "--ablate"]) == 2


def test_every_recipe_has_an_ablation_and_a_default_that_cannot_hold_keeps_the_recipes_value():
    """`pgolf techniques --recipe R --ablate` runs for every recipe. smoke's 64-token TTT chunk differs from the
    default (256) only because its TTT window is 128 tokens: the records' adapters are not on in it, so no row;
    with their rank too, the row resets the rank and keeps the chunk, and its name says so (session 21: the whole
    command stopped on that row)."""
    from pgolf.config import apply_overrides
    from pgolf.recipes import RECIPES, get_recipe
    from pgolf.techniques import ablations

    for name in RECIPES:
        ablations(get_recipe(name))  # validates every row it returns
    adapters = "Document-independent LoRA TTT, the records' adapters"
    smoke = get_recipe("smoke")
    assert not any(row.startswith(adapters) for row, _ in ablations(smoke))
    rows = [(row, sets) for row, sets in ablations(apply_overrides(smoke, ["eval.ttt_rank=80"])) if
            row.startswith(adapters)]
    assert len(rows) == 1 and rows[0][1] == ["eval.ttt_rank=8"]
    assert rows[0][0].endswith("(eval.ttt_chunk kept at 64: the default does not fit this recipe)")


def test_ablate_script_finds_a_row_by_number_or_by_a_piece_of_its_name(tmp_path):
    """bench/ablate.sh RECIPE N|NAME runs bench/proxy.sh as ablate-N (or as $NAME) with the row's --sets (here a
    stand-in proxy that prints its arguments), scored by the sliding eval with TTT off; a name piece that names two
    rows, or none, and a row that changes the eval only (TTT's) are one line and exit 2, before any run."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from pgolf.recipes import get_recipe
    from pgolf.techniques import ablations

    repo = Path(__file__).resolve().parents[1]
    (tmp_path / "bench").mkdir()
    shutil.copy(repo / "bench" / "ablate.sh", tmp_path / "bench" / "ablate.sh")
    (tmp_path / "bench" / "proxy.sh").write_text('#!/usr/bin/env bash\necho "PROXY $*"\n')
    (tmp_path / "bench" / "proxy.sh").chmod(0o755)
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "python3").symlink_to(sys.executable)
    env = dict(os.environ, PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}", PYTHONPATH=str(repo))

    def ablate(*args, **more_env):
        return subprocess.run(["bash", str(tmp_path / "bench" / "ablate.sh"), "best", *args],
                              env=dict(env, **more_env), capture_output=True, text=True, timeout=120)

    rows = ablations(get_recipe("best"))
    n = next(i for i, (name, _) in enumerate(rows, 1) if name == "XSA on every layer")
    fixed = ("--set train.val_every=0 --set eval.prequant_sliding=false --set eval.ttt=false "
             "--set eval.final=sliding")
    want = f"PROXY ablate-{n} best {fixed} " + " ".join(f"--set {s}" for s in rows[n - 1][1])
    for which in (str(n), "xsa on"):
        r = ablate(which, "--set", "eval.batch_tokens=65536")
        assert r.returncode == 0 and r.stdout.strip() == want + " --set eval.batch_tokens=65536", r
    assert ablate("0").stdout.strip() == f"PROXY ablate-0 best {fixed}"
    r = ablate("0", "--set", "model.rope_dims=8", NAME="rope8")  # a named variant, scored as the rows are
    assert r.stdout.strip() == f"PROXY rope8 best {fixed} --set model.rope_dims=8", r
    for which in ("SmearGate", "no such technique", str(len(rows) + 1), "Phased score-first"):  # TTT: eval only
        r = ablate(which)
        assert r.returncode == 2 and "PROXY" not in r.stdout and len(r.stderr.strip().splitlines()) == 1, r


def test_value_embedding_starts_transparent_reaches_only_its_layers_and_trains():
    """model.ve_dim / ve_layers (VE128): zero projection at init, so the model equals itself without the value
    embedding, bit for bit; with a trained projection, layers before the first listed one see nothing of it and zero
    per-layer scales take it out exactly; every one of its tensors gets a gradient, and the optimizer puts the table
    with the embeddings, the projection with Muon's matrices and the scales with the scalars."""
    from pgolf.optim import assign_params, param_table

    torch.manual_seed(0)
    m = GPT(cfg(ve_dim=16, ve_layers=(2, 3), ortho_init=True, parallel_from=3, parallel_lanes=2))
    ids = torch.randint(0, 96, (2, 24))
    tgt = torch.randint(0, 96, (2, 24))

    def without(model):
        ve, model.value_embed = model.value_embed, None
        try:
            return model(ids, tgt)
        finally:
            model.value_embed = ve

    assert torch.equal(m(ids, tgt), without(m))  # proj zero at init (ortho_init keeps it zero)
    assert float(m.value_embed.scale.detach()) == pytest.approx(0.1)
    assert torch.equal(m.value_embed.scales.detach(), torch.ones(2))
    with torch.no_grad():  # a trained model: nothing zero any more, and a table of trained size (at its init of
        for n, p in m.named_parameters():  # N(0, 0.01) the loss moved by less than its float32 rounding on some CPUs)
            if p.ndim == 2 and not p.abs().sum():
                p.normal_(0.0, 0.05)
        m.value_embed.embed.weight.normal_(0.0, 1.0)
    seen = {}
    hook = m.blocks[1].register_forward_hook(lambda mod, a, out: seen.__setitem__(len(seen), out.detach()))
    with_ve = m(ids, tgt)
    base = without(m)
    hook.remove()
    assert not torch.equal(with_ve, base) and torch.equal(seen[0], seen[1])  # layer 1 is before layers 2-3
    with torch.no_grad():
        m.value_embed.scales.zero_()
    assert torch.equal(m(ids, tgt), base)
    with torch.no_grad():
        m.value_embed.scales.fill_(0.5)
    m(ids, tgt).backward()
    for n, p in m.value_embed.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, n
    groups = {g: {n for n, _ in ps} for g, ps in assign_params(m, param_table(OptimConfig(), True)).items()}
    assert "value_embed.embed.weight" in groups["bigram_table"] and "value_embed.proj.weight" in groups["matrix"]
    assert {"value_embed.scale", "value_embed.scales"} <= groups["scalar"]


def test_a_layer_without_attention_is_the_block_whose_attention_adds_nothing(tmp_path, embedded_dir):
    """model.no_attn_layers (the 03-31 record's layer 0): the block has no attention tensors at all, and the model
    equals, bit for bit, the model with that attention whose output projection is zero (so it adds exactly nothing),
    all other weights the same and none of them zero; a run with it trains, exports and scores every mode (TTT's
    adapters of the missing attention stay unused); a layer in the parallel region or with a value embedding, or
    out of range, is a config error."""
    from conftest import tiny_config
    from pgolf.config import ConfigError
    from pgolf.train import train

    torch.manual_seed(0)
    kw = dict(xsa_last_n=2, ln_scale=True, rope_dims=8, parallel_from=3)
    full, cut = GPT(cfg(**kw)), GPT(cfg(no_attn_layers=(0,), **kw))
    assert not any(n.startswith("blocks.0.attn") or n == "blocks.0.attn_scale" for n, _ in cut.named_parameters())
    assert any(n.startswith("blocks.1.attn.") for n, _ in cut.named_parameters())
    with torch.no_grad():
        for n, p in full.named_parameters():
            if p.ndim == 2 and not p.abs().sum() and n != "blocks.0.attn.proj.weight":
                p.normal_(0.0, 0.05)
    missing, unexpected = cut.load_state_dict(full.state_dict(), strict=False)
    assert not missing and set(unexpected) == {n for n in full.state_dict() if n.startswith("blocks.0.attn")}
    ids = torch.randint(0, 96, (2, 24))
    assert torch.equal(cut(ids, ids), full(ids, ids))
    cut(ids, ids).backward()  # every tensor it has takes part
    assert all(p.grad is not None for p in cut.parameters())
    run = train(tiny_config(model__no_attn_layers="0", eval__ttt_phases=1), tmp_path / "r")
    assert run["status"] == "complete" and set(run["roundtrip"]) == {"plain", "sliding", "ttt"}
    for bad in (dict(no_attn_layers=(3,), parallel_from=2), dict(no_attn_layers=(1,), ve_dim=8, ve_layers=(1,)),
                dict(no_attn_layers=(4,)), dict(no_attn_layers=(0, 0))):
        with pytest.raises(ConfigError):
            cfg(**bad)


def test_beside_record_script_runs_the_record_and_pgolf_at_once_and_reads_both(tmp_path):
    """bench/beside_record.sh (issue 12's acceptance 2 on two GPUs): `warm` runs 30 s of the 2026-03-31 record; the
    default runs the record on GPU 1 with its README's switches scaled to the proxy and `best` on GPU 0 through
    bench/proxy.sh, and prints each one's roundtrip scores (stand-ins for the runner and the proxy here)."""
    import json
    import os
    import shutil
    import subprocess
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    (tmp_path / "bench").mkdir()
    for script in ("beside_record.sh", "record_env.sh"):
        shutil.copy(repo / "bench" / script, tmp_path / "bench" / script)
    records = tmp_path / "shared" / "bench" / "records"
    (records / "2026-03-31_ParallelResiduals_MiniDepthRecurrence").mkdir(parents=True)
    (records / "2026-03-31_ParallelResiduals_MiniDepthRecurrence" / "train_gpt.py").write_text("")
    log = ("Total submission size: 87000000 bytes\nfinal_int6_roundtrip_exact val_loss:2.1 val_bpb:1.25804000\n"
           "Total submission size int6+brotli: 15673910 bytes\n")
    (records / "run_record.sh").write_text(
        '#!/usr/bin/env bash\necho "RECORD gpu=$CUDA_VISIBLE_DEVICES budget=$BUDGET $2 ${*:3}"\n'
        f'printf "%s" "{log}" > "$OUT/$2.log"\n')
    summary = {"bytes_total": 15584757}
    evals = {"prequant": {}, "roundtrip": {"plain": {"val_bpb": 1.22504}, "sliding": {"val_bpb": 1.19609}}}
    (tmp_path / "bench" / "proxy.sh").write_text(
        '#!/usr/bin/env bash\necho "PROXY gpu=$CUDA_VISIBLE_DEVICES $*"\n'
        f"echo 'SUMMARY best0 {json.dumps(summary)} {json.dumps(evals)}'\n")
    for f in (records / "run_record.sh", tmp_path / "bench" / "proxy.sh"):
        f.chmod(0o755)
    out = tmp_path / "out"
    env = dict(os.environ, SHARED=str(tmp_path / "shared"), OUT=str(out))
    run = [str(tmp_path / "bench" / "beside_record.sh")]
    r = subprocess.run(["bash", *run, "warm"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("RECORD gpu=1 budget=30 r0331warm BIGRAM_DIM=112 "), r
    r = subprocess.run(["bash", *run], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r
    rec = (out / "r0331.out").read_text()
    assert "RECORD gpu=1 budget=240 r0331 " in rec and " RECUR_START_STEP=1240 " in rec and "WARMDOWN_ITERS=1330" in rec
    assert (out / "pgolf.out").read_text().startswith(
        "PROXY gpu=0 best0 best --set eval.ttt=false --set eval.final=sliding")
    side = {line.split()[1]: json.loads(line.split(" ", 2)[2]) for line in r.stdout.splitlines()
            if line.startswith("SIDE")}
    assert side == {"record-0331": {"roundtrip_plain": 1.25804, "sliding": None, "bytes": 15673910},
                    "pgolf": {"roundtrip_plain": 1.22504, "sliding": 1.19609, "bytes": 15584757}}
