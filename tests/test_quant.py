import pytest
import torch

from conftest import toy_gpt
from pgolf.config import Config, ModelConfig, QuantConfig
from pgolf.model import GPT
from pgolf.quant import (ArtifactError, dequantize_rows, encode, quantize_rows, quantize_state, read_artifact,
                         save_artifact, storage_format)


@pytest.mark.parametrize("bits", [4, 5, 6, 7, 8])
def test_quantize_rows_error_bound(bits):
    torch.manual_seed(0)
    w = torch.randn(64, 300) * torch.rand(64, 1)  # rows of different scales
    q, s = quantize_rows(w, bits, clip_quantile=1.0)
    c = 2 ** (bits - 1) - 1
    assert q.dtype == torch.int8 and q.abs().max() <= c
    err = (w - dequantize_rows(q, s)).abs()
    assert (err <= s.float()[:, None] / 2 + 1e-6).all()  # half a step per element
    # relative error shrinks by ~2x per extra bit
    rel = err.norm() / w.norm()
    assert rel < 1.2 / c


def test_int8_baseline_clip_and_floor():
    w = torch.randn(8, 100000) * 0.01  # small rows: the baseline's 1/127 floor decides the step
    q, s = quantize_rows(w, 8, clip_quantile=0.9999984, scale_floor=1 / 127)
    assert torch.allclose(s.float(), torch.full((8,), 1 / 127), rtol=1e-3)


def test_policy_table():
    cfg = QuantConfig(mlp="int5", attn="int6", embed="fp16", other="int8", keep_fp16=("blocks.8.attn.c_k",))
    big = torch.zeros(512, 512)
    assert storage_format("blocks.0.mlp.fc.weight", big, cfg) == "int5"
    assert storage_format("blocks.0.attn.c_q.weight", big, cfg) == "int6"
    assert storage_format("blocks.8.attn.c_k.weight", big, cfg) == "fp16"
    assert storage_format("tok_emb.weight", big, cfg) == "fp16"
    assert storage_format("bigram.embed.weight", big, cfg) == "int8"
    assert storage_format("blocks.0.resid_mix", torch.zeros(2, 512), cfg) == "fp32"
    assert storage_format("blocks.0.attn_scale", torch.zeros(512), cfg) == "fp32"
    assert storage_format("blocks.0.attn.c_k.weight", torch.zeros(16, 16), cfg) == "fp16"  # small


@pytest.mark.parametrize("compressor", ["zlib", "lzma", "zstd", "brotli", "auto"])
def test_artifact_roundtrip(tmp_path, compressor):
    if compressor == "zstd":
        pytest.importorskip("zstandard")
    if compressor == "brotli":
        pytest.importorskip("brotli")
    m = toy_gpt()
    cfg = QuantConfig(mlp="int6", attn="int6", embed="int8", keep_float_max_numel=1000, int8_scale_floor=0.0,
                      compressor=compressor,
                      level={"zstd": 22, "brotli": 11}.get(compressor, 9))
    res = quantize_state(m.state_dict(), cfg, m.cfg.__dict__, meta={"recipe": "t"})
    n = save_artifact(tmp_path / "a.pgz", res, cfg)
    assert n == (tmp_path / "a.pgz").stat().st_size
    header, state = read_artifact(tmp_path / "a.pgz")
    assert header["meta"]["recipe"] == "t" and header["model"]["vocab_size"] == 256
    sd = m.state_dict()
    assert state.keys() == sd.keys()
    for k, v in sd.items():
        assert state[k].dtype == v.dtype and state[k].shape == v.shape
        rec = next(r for r in res.records if r.name == k)
        if rec.fmt == "fp32":
            assert torch.equal(state[k], v)
        else:
            assert (state[k] - v).norm() <= (0.04 if rec.fmt == "int6" else 0.01) * v.norm() + 1e-6, k
    GPT(ModelConfig(**header["model"])).load_state_dict(state)


def test_corrupt_artifacts_are_named(tmp_path):
    p = tmp_path / "x.pgz"
    p.write_bytes(b"nope")
    with pytest.raises(ArtifactError, match="bad magic"):
        read_artifact(p)
    m = toy_gpt()
    cfg = QuantConfig()
    save_artifact(p, quantize_state(m.state_dict(), cfg, m.cfg.__dict__), cfg)
    raw = p.read_bytes()
    p.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ArtifactError, match=str(p)):
        read_artifact(p)


def test_save_is_atomic(tmp_path, monkeypatch):
    """A failure while writing leaves the previous artifact intact."""
    m = toy_gpt()
    cfg = QuantConfig()
    res = quantize_state(m.state_dict(), cfg, m.cfg.__dict__)
    p = tmp_path / "a.pgz"
    save_artifact(p, res, cfg)
    before = p.read_bytes()
    import pgolf.quant as Q

    monkeypatch.setattr(Q, "encode", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        save_artifact(p, res, cfg)
    assert p.read_bytes() == before


def test_fit_ladder_order():
    from pgolf.quant import fit_ladder

    steps = [(q.mlp, q.attn, q.other, q.embed) for q in fit_ladder(QuantConfig(mlp="int6", attn="int6", other="int8",
                                                                                  embed="fp16"))]
    assert steps[0] == ("int6", "int6", "int8", "fp16")
    assert steps[1] == ("int5", "int6", "int8", "fp16") and steps[2] == ("int4", "int6", "int8", "fp16")
    assert steps[4] == ("int4", "int4", "int8", "fp16") and steps[-1] == ("int4", "int4", "int4", "fp16")


def test_quantize_to_budget_walks_down_until_it_fits():
    from pgolf.quant import quantize_to_budget

    m = toy_gpt()
    base = QuantConfig(mlp="int8", attn="int8", keep_float_max_numel=1000, int8_scale_floor=0.0)
    full = len(encode(quantize_state(m.state_dict(), base, m.cfg.__dict__), base))
    import dataclasses

    cfg = dataclasses.replace(base, budget_bytes=int(full * 0.93), fit_budget=True)
    logs = []
    res, used, data = quantize_to_budget(m.state_dict(), cfg, m.cfg.__dict__, {}, 0, logs.append)
    assert len(data) <= cfg.budget_bytes and used.mlp != "int8" and logs
    strict = dataclasses.replace(cfg, fit_budget=False)
    _, used2, data2 = quantize_to_budget(m.state_dict(), strict, m.cfg.__dict__, {}, 0, logs.append)
    assert used2 == strict and len(data2) == full  # without fit_budget nothing changes; the caller reports it


def test_predict_fit_takes_the_first_policy_predicted_to_fit():
    import dataclasses

    from pgolf.predict import model_shapes, predict_bytes, predict_fit
    from pgolf.quant import fit_ladder

    m = toy_gpt()
    shapes = model_shapes(m)
    base = QuantConfig(mlp="int8", attn="int8", keep_float_max_numel=1000, int8_scale_floor=0.0)
    ladder = list(fit_ladder(base))
    sizes = [predict_bytes(shapes, q, m.cfg.__dict__, sample_elems=50_000) for q in ladder[:3]]
    assert sizes[0] > sizes[1] > sizes[2]
    code = 1000
    budget = (sizes[1] + sizes[2]) // 2 + code  # only the third step fits
    cfg = dataclasses.replace(base, budget_bytes=budget, fit_budget=True)
    used, nbytes = predict_fit(shapes, cfg, m.cfg.__dict__, code, sample_elems=50_000)
    assert (used.mlp, used.attn) == (ladder[2].mlp, ladder[2].attn) and nbytes == sizes[2]
    strict = dataclasses.replace(cfg, fit_budget=False)
    used, nbytes = predict_fit(shapes, strict, m.cfg.__dict__, code, sample_elems=50_000)
    assert used == strict and nbytes == sizes[0]  # without fit_budget the policy stands, over or not


def test_predict_cli(tmp_path):
    from conftest import run_cli

    ok = run_cli(["-m", "pgolf", "predict", "--recipe", "smoke", "--vocab", "512"])
    assert ok.returncode == 0, ok.stderr
    assert "vocab 512" in ok.stdout and "fits" in ok.stdout
    over = run_cli(["-m", "pgolf", "predict", "--recipe", "smoke", "--set", "quant.budget_bytes=100000"])
    assert over.returncode == 3 and "OVER" in over.stdout
    # a recipe made for a vocabulary is sized at it (best-sp8192 was once predicted at 1024 rows: 12.6 MB, not 16.0)
    sp = run_cli(["-m", "pgolf", "predict", "--recipe", "best-sp8192"])
    assert sp.returncode == 0 and "vocab 8192" in sp.stdout, sp.stdout + sp.stderr


def test_fit_ladder_custom_order_and_round_robin():
    from pgolf.config import ConfigError, apply_overrides
    from pgolf.quant import fit_ladder
    from pgolf.recipes import get_recipe

    q = QuantConfig(mlp="int6", attn="int6", other="int8", embed="int8", fit_order=("mlp", "embed"))
    steps = [(c.mlp, c.attn, c.embed) for c in fit_ladder(q)]
    assert steps == [("int6", "int6", "int8"), ("int5", "int6", "int8"), ("int4", "int6", "int8"),
                     ("int4", "int6", "int7"), ("int4", "int6", "int6"), ("int4", "int6", "int5"),
                     ("int4", "int6", "int4")]  # attention and other are not in the order: left alone
    rr = QuantConfig(mlp="int6", attn="int6", other="int8", embed="int8", fit_order=("mlp", "embed"),
                     fit_round_robin=True)
    steps = [(c.mlp, c.embed) for c in fit_ladder(rr)]
    assert steps[:5] == [("int6", "int8"), ("int5", "int8"), ("int5", "int7"), ("int4", "int7"), ("int4", "int6")]
    assert steps[-1] == ("int4", "int4") and len(steps) == len(set(steps))
    cfg = apply_overrides(get_recipe("best"), ["quant.fit_order=mlp,embed,attn", "quant.fit_round_robin=true"])
    assert cfg.quant.fit_order == ("mlp", "embed", "attn") and cfg.quant.fit_round_robin
    with pytest.raises(ConfigError, match="fit_order"):
        apply_overrides(get_recipe("best"), ["quant.fit_order=mlp,emb"])


def test_sdclip_scale_is_k_standard_deviations():
    from pgolf.quant import quantize_tensor

    torch.manual_seed(0)
    w = torch.randn(16, 400) * torch.rand(16, 1)
    q = QuantConfig(sdclip="mlp:11.5,attn:13")
    codes, s = quantize_tensor(w, "int6", q, "mlp")
    assert torch.allclose(s.float(), (11.5 * w.std(1, unbiased=False) / 31).half().float())
    _, s_attn = quantize_tensor(w, "int6", q, "attn")
    assert torch.allclose(s_attn.float() / s.float(), torch.full((16,), 13 / 11.5), rtol=2e-3)
    _, s_other = quantize_tensor(w, "int6", q, "other")  # no k for the group: the quantile clip as before
    assert not torch.allclose(s_other.float(), s.float())
    with pytest.raises(Exception, match="sdclip"):
        QuantConfig(sdclip="mlp:0")


def test_gptq_with_an_identity_hessian_is_round_to_nearest():
    from pgolf.quant import gptq_rows, quantize_rows

    torch.manual_seed(0)
    w = torch.randn(32, 96)
    q, s = quantize_rows(w, 6, clip_quantile=1.0)
    assert torch.equal(gptq_rows(w, torch.eye(96) * 7.0, s, 6), q)


def test_gptq_lowers_the_layer_output_error_on_correlated_inputs():
    from pgolf.quant import dequantize_rows, gptq_rows, quantize_rows

    torch.manual_seed(0)
    mix = torch.randn(96, 96) / 96 ** 0.5
    X = torch.randn(4096, 96) @ (torch.eye(96) + 2 * mix)  # correlated inputs, as a layer sees
    w = torch.randn(48, 96) * 0.05
    q, s = quantize_rows(w, 5, clip_quantile=1.0)
    g = gptq_rows(w, X.T @ X, s, 5)
    rtn_err = (X @ (w - dequantize_rows(q, s)).T).norm()
    gptq_err = (X @ (w - dequantize_rows(g, s)).T).norm()
    assert g.abs().max() <= 15 and gptq_err < 0.8 * rtn_err, (gptq_err, rtn_err)


def test_gptq_of_a_stack_gives_each_matrix_its_own_codes():
    """GPTQ solved for a stack of same-shape matrices (one column loop; the export does this per shape) gives each
    matrix exactly the codes it gets alone: its own Hessian, column order, damping and grid. With the stack's
    matrices sharing a Hessian or order the test could not see a mix-up, so each has its own."""
    from pgolf.quant import gptq_many, gptq_rows, quantize_rows

    torch.manual_seed(0)
    jobs = []
    for i in range(3):
        X = torch.randn(512, 96) @ (torch.eye(96) + torch.randn(96, 96) / (4 + i))
        w = torch.randn(40, 96) * 0.05
        jobs.append((w, X.T @ X, quantize_rows(w, 6)[1], 6))
    w2 = torch.randn(24, 96) * 0.05  # another shape: a stack of its own
    jobs.insert(1, (w2, jobs[0][1], quantize_rows(w2, 5)[1], 5))
    alone = [gptq_rows(*j) for j in jobs]
    stacked = gptq_many(jobs)
    assert all(torch.equal(a, b) for a, b in zip(alone, stacked))
    assert not torch.equal(alone[0], alone[2])
    assert torch.equal(gptq_many(jobs, max_batch_bytes=1)[3], alone[3])  # stacks of one


def test_gptq_survives_a_hessian_that_is_not_positive_definite():
    """A Hessian summed in low precision can have negative eigenvalues larger than the 1% damping (the proxy's
    bfloat16 sums did): GPTQ damps more and still returns codes on the grid, close to round-to-nearest's error."""
    from pgolf.quant import dequantize_rows, gptq_rows, quantize_rows

    torch.manual_seed(0)
    X = torch.randn(64, 96, dtype=torch.float64)
    H = X.T @ X  # rank 64 < 96
    H -= 0.05 * torch.diag(H).mean() * torch.eye(96, dtype=torch.float64)  # 5% of the mean diagonal below PSD
    with pytest.raises(torch.linalg.LinAlgError):
        torch.linalg.cholesky(H + 0.01 * torch.diag(H).mean() * torch.eye(96, dtype=torch.float64))
    w = torch.randn(32, 96) * 0.05
    q, s = quantize_rows(w, 6, clip_quantile=1.0)
    g = gptq_rows(w, H.float(), s, 6)
    assert g.abs().max() <= 31
    assert (w - dequantize_rows(g, s)).norm() < 3 * (w - dequantize_rows(q, s)).norm()


def test_gptq_calibration_sums_in_float64():
    from pgolf.train import calibrate_hessians

    m = toy_gpt()

    class Loader:
        def next_batch(self, n, t):
            x = torch.randint(0, m.cfg.vocab_size, (2, 16))
            return x, x

    cfg = Config()
    cfg.train.micro_batch_tokens, cfg.train.seq_len = 32, 16
    hs = calibrate_hessians(m, Loader(), cfg, 2)
    assert hs and all(h.dtype == torch.float64 and torch.equal(h, h.T) for h in hs.values())


def test_gptq_embed_calibrates_the_tied_head_on_the_final_hidden_states():
    """quant.gptq_embed: the tied embedding's H is the sum of h h^T over the final normed hidden states (the output
    head's inputs); off, the embedding has no H (round to nearest). GPTQ with it lowers the head's logit error."""
    from pgolf.quant import gptq_rows, quantize_rows, dequantize_rows
    from pgolf.train import calibrate_hessians

    m = toy_gpt()
    batches = [torch.randint(0, m.cfg.vocab_size, (2, 16), generator=torch.Generator().manual_seed(i)) for i in range(3)]

    class Loader:
        def __init__(self):
            self.i = 0

        def next_batch(self, n, t):
            self.i += 1
            return batches[self.i - 1], batches[self.i - 1]

    cfg = Config()
    cfg.train.micro_batch_tokens, cfg.train.seq_len = 32, 16
    assert "tok_emb.weight" not in calibrate_hessians(m, Loader(), cfg, 3)
    cfg.quant.gptq_embed = True
    hs = calibrate_hessians(m, Loader(), cfg, 3)
    with torch.no_grad():
        h = torch.cat([m.hidden(x).reshape(-1, m.cfg.model_dim) for x in batches]).double()
    H = hs["tok_emb.weight"]
    assert H.dtype == torch.float64 and torch.allclose(H, h.T @ h, rtol=1e-12, atol=1e-9)
    w = m.tok_emb.weight.detach()
    q, s = quantize_rows(w, 5)
    g = gptq_rows(w, H, s, 5)
    rtn = (h.float() @ (w - dequantize_rows(q, s)).T).norm()
    assert (h.float() @ (w - dequantize_rows(g, s)).T).norm() < 0.9 * rtn


def test_gptq_export_round_trips(tmp_path):
    m = toy_gpt()
    cfg = QuantConfig(mlp="int6", attn="int6", keep_float_max_numel=1000, int8_scale_floor=0.0)
    sd = m.state_dict()
    torch.manual_seed(1)
    hs = {k: (lambda X: X.T @ X)(torch.randn(512, v.shape[1])) for k, v in sd.items()
          if ".mlp." in k or ".attn.c_" in k}
    res = quantize_state(sd, cfg, m.cfg.__dict__, hessians=hs)
    assert {r.name for r in res.records if r.fmt_note == "gptq"} == set(hs)
    save_artifact(tmp_path / "g.pgz", res, cfg)
    _, state = read_artifact(tmp_path / "g.pgz")
    plain = quantize_state(sd, cfg, m.cfg.__dict__)
    save_artifact(tmp_path / "p.pgz", plain, cfg)
    _, pstate = read_artifact(tmp_path / "p.pgz")
    name = next(iter(hs))
    assert not torch.equal(state[name], pstate[name])  # other codes ...
    assert (state[name] - sd[name]).norm() < 0.1 * sd[name].norm()  # ... on the same grid, close to the weights


def test_streams_pick_the_smallest_compressor_and_old_artifacts_still_read(tmp_path):
    """auto: each stream (header, codes of a width, scales, floats) with the smallest of zstd/brotli/lzma, so the
    artifact is never larger than any single compressor's; and a version-1 artifact (one stream) still reads."""
    from pgolf.quant import COMPRESSORS, MAGIC, compress

    pytest.importorskip("brotli")
    m = toy_gpt()
    sizes = {}
    for c, lvl in (("zstd", 22), ("brotli", 11), ("lzma", 9), ("auto", 0)):
        cfg = QuantConfig(mlp="int6", attn="int5", keep_float_max_numel=1000, compressor=c, level=lvl or 9)
        res = quantize_state(m.state_dict(), cfg, m.cfg.__dict__)
        assert len(res.streams) >= 4  # header | int5 codes | int6 codes | int8 codes | scales | floats
        sizes[c] = len(encode(res, cfg))
    assert sizes["auto"] <= min(sizes["zstd"], sizes["brotli"], sizes["lzma"])
    v1 = MAGIC + bytes([1, COMPRESSORS["lzma"]]) + compress(res.payload, "lzma", 9)
    (tmp_path / "v1.pgz").write_bytes(v1)
    _, state = read_artifact(tmp_path / "v1.pgz")
    assert state.keys() == m.state_dict().keys()
    raw = encode(res, cfg)
    (tmp_path / "cut.pgz").write_bytes(raw[: len(raw) - 10])
    with pytest.raises(ArtifactError, match="truncated"):
        read_artifact(tmp_path / "cut.pgz")


@pytest.mark.parametrize("compressor", ["zlib", "auto"])
def test_pieces_read_back_and_do_not_depend_on_the_thread_count(tmp_path, monkeypatch, compressor):
    """encode() cuts each stream into pieces of at most PIECE_BYTES and compresses them on threads: the artifact
    reads back to the same tensors as with whole streams, its bytes are the same on one thread and on many, and a
    payload of more than MAX_PIECES pieces gets larger pieces (the count is one byte)."""
    import pgolf.quant as quant

    m = toy_gpt()
    cfg = QuantConfig(mlp="int6", attn="int6", keep_float_max_numel=1000, compressor=compressor, level=9)
    res = quantize_state(m.state_dict(), cfg, m.cfg.__dict__)
    whole = encode(res, cfg)
    monkeypatch.setattr(quant, "PIECE_BYTES", 1000)
    cut = encode(res, cfg)
    assert cut[6] > whole[6] >= 4  # more pieces than streams
    monkeypatch.setattr(quant.os, "cpu_count", lambda: 1)
    assert encode(res, cfg) == cut
    states = []
    for name, raw in (("whole", whole), ("cut", cut)):
        (tmp_path / name).write_bytes(raw)
        states.append(read_artifact(tmp_path / name)[1])
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    monkeypatch.setattr(quant, "PIECE_BYTES", 1)
    monkeypatch.setattr(quant, "MAX_PIECES", 50)
    assert encode(res, cfg)[6] <= 50 + len(res.streams) + 1
