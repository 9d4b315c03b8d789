"""The export-side corrections of pgolf.quant (issue 13): LQER, AWQ-lite, row order. Each one read back exactly as
the writer reconstructed it, each doing what it claims, and the defaults writing the artifact they always wrote."""

import hashlib
from dataclasses import replace

import numpy
import pytest
import torch

from conftest import toy_gpt
from pgolf.config import ConfigError, ModelConfig, QuantConfig, apply_overrides
from pgolf.model import GPT
from pgolf.quant import (dequantize_rows, encode, fake_quantize, quantize_rows, quantize_state, read_artifact,
                         read_payload, save_artifact, similarity_order)


def _read(tmp_path, res, cfg, name="a.pgz"):
    save_artifact(tmp_path / name, res, cfg)
    return read_artifact(tmp_path / name)


def _det_state():
    """Weights from sin/cos alone: the same numbers on every machine."""
    def w(r, c, k):
        i = torch.arange(r * c, dtype=torch.float64).reshape(r, c)
        return (torch.sin(i * 0.37 + k) * torch.cos(i * 0.011 * k) * 0.05).float()
    return {"tok_emb.weight": w(64, 48, 1), "blocks.0.attn.c_q.weight": w(48, 48, 2),
            "blocks.0.mlp.fc.weight": w(96, 48, 3), "blocks.0.mlp.proj.weight": w(48, 96, 4),
            "blocks.0.attn_scale": w(1, 48, 5).reshape(48), "bigram.scale": w(4, 4, 6)}


def test_defaults_write_the_format_2_artifact_byte_for_byte(tmp_path):
    """The payload's hash was computed with the quantizer before these techniques existed (commit ac12d7c)."""
    cfg = QuantConfig(mlp="int5", attn="int6", keep_float_max_numel=100)
    res = quantize_state(_det_state(), cfg, {"m": 1})
    assert hashlib.sha256(res.payload).hexdigest() == \
        "30d6f0cc5eea8c76ba5b6773a21fc30462b383a735c466a0899f89e6290db3fc"
    assert res.header["format"] == 2 and encode(res, cfg)[5] == 2
    assert not any(k in t for t in res.header["tensors"] for k in ("awq", "lqer", "order"))
    header, state = _read(tmp_path, res, cfg)
    for k, v in res.recon.items():
        assert torch.equal(state[k], v)


def _low_rank_plus_noise(rows=128, cols=192, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(rows, 4, generator=g) @ torch.randn(4, cols, generator=g)) * 0.02 \
        + torch.randn(rows, cols, generator=g) * 0.01


def test_lqer_lowers_the_error_and_the_reader_gets_the_writers_reconstruction(tmp_path):
    w = _low_rank_plus_noise()
    state = {"blocks.0.mlp.fc.weight": w}
    plain = QuantConfig(mlp="int4", keep_float_max_numel=100)
    lqer = QuantConfig(mlp="int4", keep_float_max_numel=100, lqer_top=1, lqer_rank=4)
    r0, r1 = quantize_state(state, plain, {}), quantize_state(state, lqer, {})
    e0 = (w - r0.recon["blocks.0.mlp.fc.weight"]).norm()
    e1 = (w - r1.recon["blocks.0.mlp.fc.weight"]).norm()
    assert e1 < 0.97 * e0, (e1, e0)
    rec = r1.header["tensors"][0]
    assert rec["fmt_note"] == "lqer" and rec["lqer"]["rank"] == 4 and r1.header["format"] == 3
    assert abs(rec["rel_error"] - (e1 / w.norm()).item()) < 1e-5  # the error of what the reader gets
    _, back = _read(tmp_path, r1, lqer)
    assert torch.equal(back["blocks.0.mlp.fc.weight"], r1.recon["blocks.0.mlp.fc.weight"])
    assert len(r1.streams) > len(r0.streams)  # the factors in streams of their own


def test_lqer_goes_to_the_k_tensors_with_the_largest_error():
    g = torch.Generator().manual_seed(1)
    scales = {"blocks.0.mlp.fc.weight": 1.0, "blocks.1.mlp.fc.weight": 4.0, "blocks.2.mlp.fc.weight": 2.0,
              "blocks.3.mlp.fc.weight": 8.0, "blocks.4.mlp.fc.weight": 0.5}
    state = {k: torch.randn(64, 96, generator=g) * s * 0.01 for k, s in scales.items()}
    res = quantize_state(state, QuantConfig(mlp="int5", keep_float_max_numel=100, lqer_top=2), {})
    assert {t["name"] for t in res.header["tensors"] if "lqer" in t} == {"blocks.3.mlp.fc.weight",
                                                                          "blocks.1.mlp.fc.weight"}


def test_awq_keeps_the_salient_columns_at_int8_and_round_trips(tmp_path):
    g = torch.Generator().manual_seed(2)
    w = torch.randn(64, 256, generator=g) * 0.02
    loud = torch.randperm(256, generator=g)[:64]
    w[:, loud] *= 4  # by column norm these are the salient ones
    name = "blocks.0.mlp.fc.weight"
    cfg = QuantConfig(mlp="int4", keep_float_max_numel=100, awq=True)
    res = quantize_state({name: w}, cfg, {})
    rec = res.header["tensors"][0]
    assert rec["awq"]["saliency"] == "colnorm" and rec["awq"]["n"] == 64 and rec["fmt_note"] == "awq-colnorm"
    r = res.recon[name]
    cols = loud.sort().values
    q8, s8 = quantize_rows(w[:, cols], 8)
    assert torch.equal(r[:, cols], dequantize_rows(q8, s8))  # exactly the int8 quantizer's reconstruction
    assert ((w[:, cols] - r[:, cols]).abs() <= s8.float()[:, None] / 2 + 1e-7).all()
    plain = quantize_state({name: w}, QuantConfig(mlp="int4", keep_float_max_numel=100), {}).recon[name]
    assert (w - r).norm() < (w - plain).norm()
    _, back = _read(tmp_path, res, cfg)
    assert torch.equal(back[name], r)
    # with a Hessian: its diagonal decides (and GPTQ quantizes those columns last, on their int8 grid)
    sal = torch.zeros(256)
    sal[:64] = 10.0
    H = torch.diag(sal + 1.0)
    res_h = quantize_state({name: w}, cfg, {}, hessians={name: H})
    rec = res_h.header["tensors"][0]
    assert rec["awq"]["saliency"] == "hessian" and rec["fmt_note"] == "gptq+awq-hessian"
    kept = (w[:, :64] - res_h.recon[name][:, :64]).abs()
    q8, s8 = quantize_rows(w[:, :64], 8)
    assert (kept <= s8.float()[:, None] / 2 + 1e-7).all()  # H diagonal: no error spread, int8 round-to-nearest
    _, back = _read(tmp_path, res_h, cfg, "h.pgz")
    assert torch.equal(back[name], res_h.recon[name])


def test_similarity_order_is_the_greedy_l1_chain():
    rows = torch.tensor([0, 10, 1, 11, 2], dtype=torch.int8)[:, None].expand(5, 8).contiguous()
    assert similarity_order(rows).tolist() == [0, 2, 4, 1, 3]
    q = torch.randint(-31, 32, (300, 40), dtype=torch.int8, generator=torch.Generator().manual_seed(0))
    order = similarity_order(q)
    assert torch.equal(order.sort().values, torch.arange(300))


def test_sorted_rows_read_back_bit_for_bit(tmp_path):
    m = toy_gpt()
    base = QuantConfig(mlp="int6", attn="int6", keep_float_max_numel=1000, compressor="zstd", level=22)
    sort = replace(base, sort_rows=True)
    r0, r1 = quantize_state(m.state_dict(), base, m.cfg.__dict__), quantize_state(m.state_dict(), sort, m.cfg.__dict__)
    _, s0 = _read(tmp_path, r0, base, "u.pgz")
    _, s1 = _read(tmp_path, r1, sort, "s.pgz")
    for k in s0:
        assert torch.equal(s0[k], s1[k]), k
    header, body, _ = read_payload(tmp_path / "s.pgz")
    sorted_recs = [t for t in header["tensors"] if "order" in t]
    assert sorted_recs and all(t["fmt_note"] == "sorted" for t in sorted_recs)
    for t in sorted_recs:
        order = numpy.frombuffer(body[t["order"][0]:t["order"][0] + t["order"][1]], dtype="<u2")
        assert sorted(order.tolist()) == list(range(t["shape"][0]))
    assert any(r1.payload[t["offset"]:t["offset"] + t["nbytes"]] != r0.payload[t["offset"]:t["offset"] + t["nbytes"]]
               for t in sorted_recs)  # the codes really moved


def test_all_three_with_gptq_round_trip_and_fit_the_budget(tmp_path):
    from pgolf.config import Config
    from pgolf.quant import quantize_to_budget

    m = toy_gpt()
    sd = m.state_dict()
    cfg = apply_overrides(Config(), ["quant.mlp=int6", "quant.attn=int6", "quant.keep_float_max_numel=1000",
                                     "quant.lqer_top=3", "quant.awq=true", "quant.awq_group=16",
                                     "quant.sort_rows=true", "quant.compressor=auto"]).quant
    torch.manual_seed(1)
    hs = {k: (lambda X: X.T @ X)(torch.randn(512, v.shape[1])) for k, v in sd.items()
          if ".mlp." in k or ".attn.c_" in k}
    res = quantize_state(sd, cfg, m.cfg.__dict__, hessians=hs)
    notes = [t["fmt_note"] for t in res.header["tensors"]]
    assert sum("lqer" in n for n in notes) == 3 and all("sorted" in n for n in notes if n)
    assert any(n.startswith("gptq+awq-hessian") for n in notes) and any("awq-colnorm" in n for n in notes)
    header, state = _read(tmp_path, res, cfg)
    assert header["format"] == 3 and encode(res, cfg)[5] == 3
    for k, v in res.recon.items():
        assert torch.equal(state[k], v.to(state[k].dtype)), k
    GPT(ModelConfig(**header["model"])).load_state_dict(state)
    plain = quantize_state(sd, replace(cfg, lqer_top=0, awq=False, sort_rows=False), m.cfg.__dict__,
                           hessians=hs)
    err = lambda r: sum((sd[k].float() - v).norm() ** 2 for k, v in r.recon.items())  # noqa: E731
    assert err(res) < err(plain)
    # the fit ladder walks down with the corrections on
    tight = replace(cfg, fit_budget=True, budget_bytes=len(encode(res, cfg)) - 1)
    _, used, data = quantize_to_budget(sd, tight, m.cfg.__dict__, {}, 0, lambda *a: None, hs)
    assert used.mlp == "int5" and data[5] == 3


def test_the_switches_are_validated_and_qat_ignores_them():
    with pytest.raises(ConfigError, match="lqer_a_bits"):
        QuantConfig(lqer_a_bits=1)
    with pytest.raises(ConfigError, match="awq_bits"):
        QuantConfig(awq_bits=9)
    with pytest.raises(ConfigError, match="lqer_top"):
        QuantConfig(lqer_top=-1)
    w = torch.randn(32, 128)
    on = QuantConfig(lqer_top=3, awq=True, sort_rows=True)
    assert torch.equal(fake_quantize(w, "int6", on), fake_quantize(w, "int6", QuantConfig()))  # export-side only


def test_inspect_and_predict_count_the_side_buffers(tmp_path):
    from pgolf.predict import model_shapes, predict_bytes
    from pgolf.submission import tensor_table

    m = toy_gpt()
    base = QuantConfig(mlp="int6", attn="int6", keep_float_max_numel=1000)
    on = replace(base, lqer_top=2, awq=True, awq_group=16, sort_rows=True)
    for cfg, name in ((base, "p.pgz"), (on, "s.pgz")):
        save_artifact(tmp_path / name, quantize_state(m.state_dict(), cfg, m.cfg.__dict__), cfg)
    rows0, _ = tensor_table(tmp_path / "p.pgz")
    rows1, total = tensor_table(tmp_path / "s.pgz")
    assert sum(r["bytes"] for r in rows1) == total
    fc = "blocks.0.mlp.fc.weight"
    r0, r1 = (next(r for r in rows if r["name"] == fc) for rows in (rows0, rows1))
    assert "sorted" in r1["note"] and "awq" in r1["note"] and r0["note"] == ""
    assert r1["raw_bytes"] >= r0["raw_bytes"] + 2 * 128  # + the row order, the AWQ scales and codes ...
    shapes = model_shapes(m)
    assert predict_bytes(shapes, on, m.cfg.__dict__) > predict_bytes(shapes, base, m.cfg.__dict__) + 2 * 128
