"""The artifact: per-tensor storage policy, the one quantizer, compression, and the container.

- Policy: ``storage_format`` (which format each tensor gets), ``fit_ladder`` (the policies tried, a bit at a time,
  until code + model fit the budget).
- Quantizer: ``quantize_tensor`` -- per-row symmetric integers with an fp16 scale per row; intN keeps q in
  [-(2^(N-1)-1), 2^(N-1)-1]. The export calls it, and QAT's fake quantization (``fake_quantize``) is the very same
  function followed by the dequantization, so a model trained with QAT sees exactly the weights it will ship.
- Container: b"PGOLF" + version byte + compressor byte + compressed payload, where the payload is a JSON header
  (model config, tensor table) followed by the raw buffers. Integer codes sit in int8 containers; their unused high
  bits are what the compressor removes. The counted size is the file's bytes; the submission total adds the code
  bytes (pgolf.pack). Size prediction lives in pgolf.predict, the per-tensor table in pgolf.submission (inspect).
- Export-side corrections (like GPTQ, never seen by QAT: ``fake_quantize`` stays the plain per-row grid), each off by
  default, and an artifact that uses none of them is byte for byte what format 2 always wrote:
  AWQ-lite (``quant.awq``): per integer matrix, the ``awq_group`` most salient input columns (activation second
  moment = diag of the GPTQ Hessian when there is one, else the column norm of W; the record says which) are stored
  at ``awq_bits`` with their own per-row scales, the other columns at the tensor's width on a grid fitted to them
  alone. LQER (``quant.lqer_top``; Zhang et al., arXiv:2402.02446): on the K tensors with the largest ||E||_F,
  E = W - deq(codes), a rank-r correction A B, A = U_r S_r (R, r) and B (r, C) at low widths (``low_rank_factors``).
  Row order (``quant.sort_rows``): the code rows stored in greedy L1 nearest-neighbour order, the permutation as
  uint16; the reader puts them back. ``reconstruct`` is the one dequantization, used by the writer (rel_error) and
  the reader alike, so what the export measures is what the reader gets. A file that uses any of them is format 3
  (same container as 2), which an older pgolf refuses instead of reading it without the corrections.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import lzma
import math
import os
import struct
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy
import torch
from torch import Tensor

from .config import QUANT_GROUPS, InputError, QuantConfig
from .files import atomic_write
from .model import CONTROL_PATTERNS

MAGIC = b"PGOLF"
VERSION = 2  # 1: the payload compressed as one stream; 2: in streams (header, codes per width, scales, floats)
VERSION_SIDE = 3  # 2's container with AWQ / LQER / row-order buffers (in their own streams) named in the tensor records
COMPRESSORS = {"zlib": 1, "zstd": 2, "lzma": 3, "brotli": 4}
AUTO = {"zstd": 22, "brotli": 11, "lzma": 9}  # quant.compressor=auto: per piece, the smallest of these
PIECE_BYTES, MAX_PIECES = 1 << 20, 200  # encode() compresses the payload in pieces of at most 1 MiB, on threads


class ArtifactError(InputError):
    """An artifact is malformed or over budget; the message names the file."""


def bits_of(fmt: str) -> int:
    return int(fmt[3:]) if fmt.startswith("int") else 0


def storage_group(name: str) -> str:
    """The policy group of a large matrix: embed, mlp, attn or other."""
    if "tok_emb" in name or "lm_head" in name:
        return "embed"
    if ".mlp." in name or ".mlp_repeats." in name:  # model.recur_untie_mlp's MLPs too
        return "mlp"
    if ".attn." in name:
        return "attn"
    return "other"


def storage_format(name: str, t: Tensor, cfg: QuantConfig) -> str:
    """The policy table: the first rule that matches decides a tensor's format."""
    if not t.is_floating_point():
        return "raw"
    if any(k in name for k in CONTROL_PATTERNS):
        return "fp32"
    if any(k in name for k in cfg.keep_fp16):
        return "fp16"
    if t.numel() <= cfg.keep_float_max_numel or t.ndim != 2:
        return cfg.small
    return getattr(cfg, storage_group(name))


CLIP_CANDIDATES = (0.999, 0.9995, 0.9999, 0.99999, 1.0)  # GPTQ-lite (2026-03-22 record)


def _row_clip(w: Tensor, quantile: float) -> Tensor:
    return w.abs().amax(dim=1) if quantile >= 1.0 else torch.quantile(w.abs(), quantile, dim=1)


def _quantize_with_clip(w: Tensor, clip: Tensor, c: int, scale_floor: float) -> tuple[Tensor, Tensor]:
    scale = (clip / c).clamp_min(max(scale_floor, 1e-12)).to(torch.float16).clamp_min(torch.finfo(torch.float16).tiny)
    s = scale.float()[:, None]
    clip = torch.minimum(clip[:, None], c * s)  # never clip inside the representable range
    q = torch.clamp(torch.round(torch.clamp(w, -clip, clip) / s), -c, c).to(torch.int8)
    return q, scale


def quantize_rows(w: Tensor, bits: int, clip_quantile: float = 1.0, scale_floor: float = 0.0,
                  prune_frac: float = 0.0, clip_search: bool = False, clip_k: float = 0.0) -> tuple[Tensor, Tensor]:
    """Per-row symmetric quantization: returns (q int8 (R, C), scale fp16 (R,)).

    The clip is a per-row quantile of |w| (1.0 = the row max); with ``clip_search`` each row takes the candidate
    clip with the lowest reconstruction error; with ``clip_k`` > 0 it is k standard deviations of the row (SDClip,
    2026-04-05: the entropy of the codes, hence the compressed size, follows log k)."""
    w = w.detach().float()
    if prune_frac > 0:
        thr = torch.quantile(w.abs().flatten()[: 1 << 24], prune_frac)
        w = torch.where(w.abs() < thr, torch.zeros_like(w), w)
    c = 2 ** (bits - 1) - 1
    if clip_k > 0:
        q, scale = _quantize_with_clip(w, clip_k * w.std(dim=1, unbiased=False), c, scale_floor)
        return q.contiguous(), scale.contiguous()
    if not clip_search:
        q, scale = _quantize_with_clip(w, _row_clip(w, clip_quantile), c, scale_floor)
        return q.contiguous(), scale.contiguous()
    best_q, best_s, best_err = None, None, None
    for qt in CLIP_CANDIDATES:
        q, s = _quantize_with_clip(w, _row_clip(w, qt), c, scale_floor)
        err = (w - q.float() * s.float()[:, None]).square().sum(dim=1)
        if best_err is None:
            best_q, best_s, best_err = q, s, err
        else:
            better = err < best_err
            best_q = torch.where(better[:, None], q, best_q)
            best_s = torch.where(better, s, best_s)
            best_err = torch.minimum(err, best_err)
    return best_q.contiguous(), best_s.contiguous()


def dequantize_rows(q: Tensor, scale: Tensor) -> Tensor:
    return q.float() * scale.float()[:, None]


def _inverse_cholesky(H: Tensor, damp: float, tries: int = 4) -> Tensor:
    """The upper Cholesky factor of (H + damp * mean(diag H) * I)^-1. A Hessian that is not positive definite even
    so (rounding in its sums, a damping too small for its spread) gets 10x more damping per try instead of stopping
    the export; one that still fails after ``tries`` raises."""
    eye = torch.eye(H.shape[0], dtype=H.dtype, device=H.device)
    step = torch.mean(torch.diag(H))
    for t in range(tries):
        L, info = torch.linalg.cholesky_ex(H + damp * 10 ** t * step * eye)
        if int(info) == 0:
            return torch.linalg.cholesky(torch.cholesky_inverse(L), upper=True)
    raise torch.linalg.LinAlgError(f"GPTQ: Hessian not positive definite after {tries} dampings")


def gptq_rows(w: Tensor, H: Tensor, scale: Tensor, bits: int, block: int = 128, damp: float = 0.01,
              keep: tuple[Tensor, Tensor, int] | None = None) -> Tensor:
    """GPTQ (Frantar et al., arXiv:2210.17323) on a fixed per-row grid: quantize the columns one by one (in
    decreasing order of H's diagonal), spreading each column's rounding error over the columns not yet quantized
    through the Cholesky factor of the inverse Hessian, so the layer's output on the calibration inputs changes as
    little as possible. w (R, C); H (C, C) = sum of x x^T over the calibration inputs of the layer; ``scale`` (R,)
    the grid (from the policy's clip: the same scales the artifact stores). Returns q int8 (R, C).
    B same-shape matrices, w a (B, R, C) stack or a list of (R, C) with their own H (B of (C, C)) and scale
    (B, R), are solved in one column loop (each matrix its own order, factor and arithmetic; the stack shares only
    the kernel launches, which are what the loop's time is: ~10 small kernels per column) and give (B, R, C) -- the
    codes each would get alone.
    With H a multiple of the identity no error is spread and the result is round-to-nearest (tested).
    ``keep`` = (columns, scale (R,), bits), one matrix only: AWQ's salient columns, on their own finer grid, are
    quantized last, so they absorb the error of all the others."""
    single = torch.is_tensor(w) and w.dim() == 2
    if single:
        w, H, scale = [w], [H], scale[None]
    assert keep is None or len(w) == 1, "GPTQ with AWQ columns: one matrix at a time"
    C = w[0].shape[1]
    c = 2 ** (bits - 1) - 1
    Ws, Hinvs, perms = [], [], []
    for b in range(len(w)):
        Hb = H[b].detach().double().clone()  # on the Hessian's device: the calibration's GPU, where float64 is fast
        Wb = w[b].detach().to(Hb.device).double().clone()
        dead = torch.diag(Hb) == 0  # inputs never seen: nothing to fit, quantize to 0
        Hb[dead, dead] = 1.0
        Wb[:, dead] = 0.0
        Hb = (Hb + Hb.T) / 2
        perm = torch.argsort(torch.diag(Hb), descending=True, stable=True)
        if keep is not None:
            kept = torch.zeros(C, dtype=torch.bool, device=Wb.device)
            kept[keep[0]] = True
            perm = torch.cat([perm[~kept[perm]], perm[kept[perm]]])
        Ws.append(Wb[:, perm])
        Hinvs.append(_inverse_cholesky(Hb[perm][:, perm], damp))
        perms.append(perm)
    W, Hinv = torch.stack(Ws), torch.stack(Hinvs)
    s = torch.stack(list(scale)).double().to(W.device)
    if keep is not None:
        kept, sk, ck = kept[perms[0]].tolist(), keep[1].double().to(W.device)[None], 2 ** (keep[2] - 1) - 1
    else:
        kept = [False] * C
    Q = torch.zeros_like(W)
    for i1 in range(0, C, block):
        i2 = min(i1 + block, C)
        W1, Hi = W[:, :, i1:i2].clone(), Hinv[:, i1:i2, i1:i2]
        err = torch.zeros_like(W1)
        for j in range(i2 - i1):
            sj, cj = (sk, ck) if kept[i1 + j] else (s, c)
            q = torch.clamp(torch.round(W1[:, :, j] / sj), -cj, cj)
            Q[:, :, i1 + j] = q
            e = (W1[:, :, j] - q * sj) / Hi[:, j, j, None]
            W1[:, :, j:] -= e[:, :, None] * Hi[:, None, j, j:]
            err[:, :, j] = e
        W[:, :, i2:] -= err @ Hinv[:, i1:i2, i2:]
    Q = torch.stack([Q[b][:, torch.argsort(perm)] for b, perm in enumerate(perms)]).to(torch.int8).cpu()
    return Q[0] if single else Q


def gptq_many(jobs: list[tuple[Tensor, Tensor, Tensor, int]], max_batch_bytes: int = 1 << 30) -> list[Tensor]:
    """GPTQ codes of several matrices, jobs = [(w (R, C), H (C, C), scale (R,), bits)]: those of one shape, bit width
    and Hessian device solved as stacks (``gptq_rows``), at most ``max_batch_bytes`` of float64 weights and Hessians
    per stack. Returns the codes in the jobs' order."""
    out: list[Tensor | None] = [None] * len(jobs)
    groups: dict[tuple, list[int]] = {}
    for i, (w, H, _, bits) in enumerate(jobs):
        groups.setdefault((tuple(w.shape), bits, str(H.device)), []).append(i)
    for (shape, bits, _), idx in groups.items():
        per = 8 * (shape[0] * shape[1] + shape[1] * shape[1]) * 3  # W, H and Hinv (+ the working copies)
        n = max(1, max_batch_bytes // per)
        for k in range(0, len(idx), n):
            part = idx[k:k + n]
            Q = gptq_rows([jobs[i][0] for i in part], [jobs[i][1] for i in part], [jobs[i][2] for i in part], bits)
            for i, q in zip(part, Q):
                out[i] = q
    return out


def prime_gptq(device: torch.device) -> None:
    """GPTQ's solve once on a toy matrix on ``device``, before the training clock: the first real solve runs inside
    it, and on a fresh GPU process it also loads the solver (cuSOLVER's Cholesky, the float64 kernels). Session 14:
    the export's quantization took 9.2 s on a fresh machine against 5.3 s on a warm one, and `best`'s run came to
    241.1 s of 240 (a cause not proven: this removes the one that can be removed before the clock)."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(4, 16, generator=g)
    x = torch.randn(64, 16, generator=g, dtype=torch.float64)
    gptq_many([(w, (x.T @ x).to(device), w.abs().amax(dim=1) / 31, 6)])


def quantize_tensor(w: Tensor, fmt: str, cfg: QuantConfig, group: str = "") -> tuple[Tensor, Tensor]:
    """The one quantizer: a 2-D float tensor to (q int8 (R, C), scale fp16 (R,)) in format ``fmt`` ("intN") with the
    policy's clip settings for its ``group`` (SDClip's k, else quantile or row max, clip search below int8), the
    int8 scale floor, pruning."""
    bits = bits_of(fmt)
    return quantize_rows(w, bits, cfg.clip_quantile, cfg.int8_scale_floor if bits == 8 else 0.0, cfg.prune_frac,
                         cfg.clip_search and bits < 8, cfg.sdclip_k.get(group, 0.0))


def fake_quantize(w: Tensor, fmt: str, cfg: QuantConfig, group: str = "") -> Tensor:
    """``w`` as the artifact will give it back: ``quantize_tensor`` then dequantized, in w's shape and dtype."""
    q, s = quantize_tensor(w.reshape(w.shape[0], -1), fmt, cfg, group)
    return dequantize_rows(q, s).reshape(w.shape).to(w.dtype)


def qat_function(name: str, w: Tensor, cfg: QuantConfig):
    """QAT's fake quantization for one weight under policy ``cfg``: ``fake_quantize`` in the tensor's storage
    format, or None for a tensor the artifact does not store as integers."""
    fmt = storage_format(name, w, cfg)
    return functools.partial(fake_quantize, fmt=fmt, cfg=cfg, group=storage_group(name)) \
        if fmt.startswith("int") else None


# ---- export-side corrections: AWQ-lite, LQER, row order (QAT never sees them; see the module docstring) ----

LQER_GROUP = 64  # B's scale groups along the input dimension


@dataclass
class Coded:
    """One integer matrix as the artifact stores it. q (R, C - n) codes of the tensor's width (the columns not kept
    by AWQ), rows in stored order; s (R,) fp16. Optional: AWQ's kept columns (n,) with their codes (R, n) and scales
    (R,); LQER's factor codes A (R, r), B (r, C) with scales (r,) and (r, ceil(C / 64)); the row order (R,) (stored
    row i is row order[i])."""

    q: Tensor
    s: Tensor
    awq_cols: Tensor | None = None
    awq_q: Tensor | None = None
    awq_s: Tensor | None = None
    awq_bits: int = 8
    lqer_a: Tensor | None = None
    lqer_as: Tensor | None = None
    lqer_b: Tensor | None = None
    lqer_bs: Tensor | None = None
    order: Tensor | None = None


def quantize_midrise(x: Tensor, bits: int, group: int = 0) -> tuple[Tensor, Tensor]:
    """Symmetric mid-rise codes for LQER's factors: k in [-2^(b-1), 2^(b-1) - 1], value (k + 1/2) s, all 2^b levels
    used and none wasted on an exact zero (int2: +-s/2, +-3s/2, as PR #1797's A). One scale per column of x (group=0)
    or per group of ``group`` entries along each row; s = max |x| / (2^(b-1) - 1/2) in fp16. Returns (k int8, s fp16
    (C,) or (R, ceil(C / group)))."""
    x = x.float()
    half = 2 ** (bits - 1)
    if group:
        pad = (-x.shape[1]) % group
        amax = torch.nn.functional.pad(x.abs(), (0, pad)).reshape(x.shape[0], -1, group).amax(-1)
    else:
        amax = x.abs().amax(0)
    s = (amax / (half - 0.5)).to(torch.float16).clamp_min(torch.finfo(torch.float16).tiny)
    k = torch.clamp(torch.floor(x / _expand_scale(s, x.shape, group)), -half, half - 1).to(torch.int8)
    return k.contiguous(), s.contiguous()


def _expand_scale(s: Tensor, shape, group: int) -> Tensor:
    return s.float().repeat_interleave(group, dim=1)[:, :shape[1]] if group else s.float()[None, :]


def dequantize_midrise(k: Tensor, s: Tensor, group: int = 0) -> Tensor:
    return (k.float() + 0.5) * _expand_scale(s, k.shape, group)


def low_rank_factors(E: Tensor, rank: int, a_bits: int, b_bits: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """LQER's stored factors of the error E (R, C): A = U_r S_r from the SVD at ``a_bits`` with one scale per rank
    component (the columns of U_r S_r differ by the singular values, so a per-matrix scale would leave the smaller
    components a level or two), then B = argmin ||E - deq(A) B|| (least squares given the quantized A, so B corrects
    A's rounding as well; for A exact it is V_r^T) at ``b_bits`` with a scale per group of 64 along C (B's rows are
    unit-norm directions whose entries vary across C). Returns (kA (R, r), sA (r,), kB (r, C), sB (r, G))."""
    U, S, _ = torch.linalg.svd(E.double(), full_matrices=False)
    r = min(rank, S.numel())
    ka, sa = quantize_midrise((U[:, :r] * S[:r]).float(), a_bits)
    A = dequantize_midrise(ka, sa).double()
    B = torch.linalg.pinv(A) @ E.double()
    kb, sb = quantize_midrise(B.float(), b_bits, LQER_GROUP)
    return ka, sa, kb, sb


def low_rank_product(ka: Tensor, sa: Tensor, kb: Tensor, sb: Tensor) -> Tensor:
    """deq(A) deq(B) as a sum of r outer products in a fixed order: elementwise float32, so the writer and any
    reader (CPU or GPU, any thread count) get the same bits."""
    A, B = dequantize_midrise(ka, sa), dequantize_midrise(kb, sb, LQER_GROUP)
    out = torch.zeros(A.shape[0], B.shape[1])
    for i in range(A.shape[1]):
        out += A[:, i, None] * B[None, i, :]
    return out


def reconstruct(c: Coded, cols: int) -> Tensor:
    """The one dequantization of an integer matrix, (R, cols) float32: rows back in place, codes times scales, AWQ's
    columns in place, plus the LQER correction. The writer computes rel_error from it and the reader returns it."""
    q = c.q
    if c.order is not None:
        q = torch.empty_like(q)
        q[c.order.long()] = c.q
    w = dequantize_rows(q, c.s)
    if c.awq_cols is not None:
        full = torch.empty(q.shape[0], cols)
        rest = torch.ones(cols, dtype=torch.bool)
        rest[c.awq_cols.long()] = False
        full[:, rest] = w
        full[:, c.awq_cols.long()] = dequantize_rows(c.awq_q, c.awq_s)
        w = full
    if c.lqer_a is not None:
        w = w + low_rank_product(c.lqer_a, c.lqer_as, c.lqer_b, c.lqer_bs)
    return w


def similarity_order(q: Tensor, block: int = 1024) -> Tensor:
    """Greedy nearest-neighbour row order by L1 distance of the codes: start at row 0, repeatedly go to the nearest
    row not yet visited. Distances by ``torch.cdist`` in row blocks, on the GPU when there is one (on a CPU it is
    the slow part: ~R^2 C operations). Returns (R,) int64, a permutation."""
    dev = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    x = q.to(dev, torch.float32)
    R = x.shape[0]
    D = torch.cat([torch.cdist(x[i:i + block], x, p=1) for i in range(0, R, block)])  # (R, R), exact integers
    D.fill_diagonal_(float("inf"))
    order = torch.empty(R, dtype=torch.long, device=dev)
    order[0] = cur = 0
    D[:, 0] = float("inf")
    for i in range(1, R):
        cur = int(torch.argmin(D[cur]))
        order[i] = cur
        D[:, cur] = float("inf")
    return order.cpu()


def awq_columns(w: Tensor, H: Tensor | None, n: int) -> tuple[Tensor, str]:
    """The ``n`` most salient input columns of w (R, C), ascending: by the activation second moment (diag of the
    Hessian H = sum x x^T) when there is one, else by the column norm of w. Returns (columns, "hessian"|"colnorm")."""
    sal, how = (torch.diag(H).float().cpu(), "hessian") if H is not None else (w.float().square().sum(0), "colnorm")
    return torch.sort(torch.topk(sal, n).indices).values, how


def awq_applies(w: Tensor, fmt: str, cfg: QuantConfig) -> bool:
    return cfg.awq and cfg.awq_bits > bits_of(fmt) and w.shape[1] > cfg.awq_group


def code_matrix(w: Tensor, fmt: str, cfg: QuantConfig, group: str, H: Tensor | None = None) -> tuple[Coded, str]:
    """Codes of one 2-D matrix in format ``fmt``: the policy's grid, and AWQ-lite when on and the tensor is narrower
    than ``cfg.awq_bits`` -- with GPTQ when ``H`` is given. Returns (Coded without LQER or row order, the record's
    note). GPTQ of a matrix without AWQ columns is not solved here but by ``quantize_state``, in stacks per shape
    (``gptq_many``), on the grid this returns."""
    bits = bits_of(fmt)
    notes = ["gptq"] if H is not None else []
    C = w.shape[1]
    if awq_applies(w, fmt, cfg):
        cols, how = awq_columns(w, H, cfg.awq_group)
        rest = torch.ones(C, dtype=torch.bool)
        rest[cols] = False
        q, s = quantize_tensor(w[:, rest], fmt, cfg, group)  # the grid fitted to the columns it codes
        qa, sa = quantize_rows(w[:, cols], cfg.awq_bits)  # row max, no floor: at most half a step per element
        if H is not None:
            full = gptq_rows(w, H, s, bits, keep=(cols, sa, cfg.awq_bits))
            q, qa = full[:, rest].contiguous(), full[:, cols].contiguous()
        notes.append(f"awq-{how}")
        return Coded(q, s, cols, qa, sa, cfg.awq_bits), "+".join(notes)
    assert H is None, "GPTQ without AWQ columns is solved in stacks (quantize_state, gptq_many)"
    q, s = quantize_tensor(w, fmt, cfg, group)
    return Coded(q, s), ""


def compress(data: bytes, compressor: str, level: int) -> bytes:
    if compressor == "zlib":
        return zlib.compress(data, level)
    if compressor == "lzma":
        return lzma.compress(data, preset=min(level, 9) | lzma.PRESET_EXTREME)
    if compressor == "zstd":
        try:
            import zstandard
        except ImportError:
            raise RuntimeError("quant.compressor=zstd needs the 'zstandard' package (pip install zstandard)") from None
        return zstandard.ZstdCompressor(level=level).compress(data)
    if compressor == "brotli":
        try:
            import brotli
        except ImportError:
            raise RuntimeError("quant.compressor=brotli needs the 'brotli' package (pip install brotli)") from None
        return brotli.compress(data, quality=min(level, 11), lgwin=24)
    raise ValueError(f"unknown compressor {compressor!r}")


def decompress(data: bytes, compressor_id: int, path: str) -> bytes:
    try:
        if compressor_id == COMPRESSORS["zlib"]:
            return zlib.decompress(data)
        if compressor_id == COMPRESSORS["lzma"]:
            return lzma.decompress(data)
        if compressor_id == COMPRESSORS["zstd"]:
            import zstandard

            return zstandard.ZstdDecompressor().decompress(data)
        if compressor_id == COMPRESSORS["brotli"]:
            import brotli

            return brotli.decompress(data)
    except ImportError as e:
        raise ArtifactError(f"{path}: compressed with {e.name}; install '{e.name}' to read it") from None
    except Exception as e:
        raise ArtifactError(f"{path}: corrupt payload ({type(e).__name__}: {e})") from None
    raise ArtifactError(f"{path}: unknown compressor id {compressor_id}")


@dataclass
class TensorRecord:
    name: str
    shape: list[int]
    fmt: str
    dtype: str  # original dtype
    offset: int = 0
    nbytes: int = 0
    scale_offset: int = -1
    scale_nbytes: int = 0
    rel_error: float = 0.0  # ||w - reconstruct(stored)|| / ||w||: what the reader gets
    fmt_note: str = ""  # "+"-joined: gptq, awq-hessian | awq-colnorm, lqer, sorted
    side: dict = field(default_factory=dict)  # format 3 only: "awq", "lqer", "order" -> their buffers' [offset, bytes]

    def to_header(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "side"}
        d["rel_error"] = round(self.rel_error, 6)
        return dict(d, **self.side)  # no side: the format-2 record, key for key


@dataclass
class QuantResult:
    header: dict
    payload: bytes
    records: list[TensorRecord] = field(default_factory=list)
    streams: list[int] = field(default_factory=list)  # payload offsets where a stream of like bytes begins
    recon: dict[str, Tensor] = field(default_factory=dict)  # integer tensors as the reader will rebuild them (fp32)
    quantize_s: float = 0.0  # quantize_to_budget: seconds quantizing (GPTQ's solve included), over all attempts
    compress_s: float = 0.0  # ... and compressing


_STORE_DTYPE = {"fp16": torch.float16, "fp32": torch.float32}
# The payload's sections in order, each a stream when not empty; the codes section is one stream per width.
_SECTIONS = ("codes", "awq_codes", "lqer_a", "lqer_b", "scales", "side_scales", "index", "floats")


def _u16(t: Tensor) -> bytes:
    return t.numpy().astype("<u2").tobytes()


def quantize_state(state: dict[str, Tensor], cfg: QuantConfig, model_config: dict, meta: dict | None = None,
                   hessians: dict[str, Tensor] | None = None) -> QuantResult:
    """Quantize a state dict by the policy and lay out header + buffers: integer codes grouped by bit width
    (narrowest first), then scales, then float passthrough. Grouping matters: zstd-22 on int8 rows followed by
    int6 rows can cost 5% more than the same rows grouped (measured: 5.26 vs 4.96 bits per weight).
    ``hessians`` (weight name -> H of its inputs): those matrices are rounded by GPTQ on the policy's grid.
    With the export-side corrections on, in this order: AWQ-lite per matrix (``code_matrix``); LQER on the
    ``lqer_top`` matrices with the largest ||E||_F (kept only where it lowers the error); the row order. Their
    buffers go in their own sections (``_SECTIONS``: AWQ codes, LQER A codes, LQER B codes after the codes; their
    scales after the scales; uint16 column indices and row orders before the floats) and the file is format 3."""
    records: list[TensorRecord] = []
    coded: dict[str, Coded] = {}
    err: dict[str, float] = {}
    stacked: dict[str, tuple[Tensor, Tensor, Tensor, int]] = {}  # GPTQ without AWQ: solved in stacks below
    for name, t in state.items():
        t = t.detach().cpu()
        fmt = storage_format(name, t, cfg)
        rec = TensorRecord(name, list(t.shape), fmt, str(t.dtype).removeprefix("torch."))
        if fmt.startswith("int"):
            w = t.reshape(t.shape[0], -1)
            H = hessians[name] if hessians and name in hessians else None
            awq = awq_applies(w, fmt, cfg)
            coded[name], rec.fmt_note = code_matrix(w, fmt, cfg, storage_group(name), H if awq else None)
            if H is not None and not awq:  # GPTQ on the grid just fitted, solved below in stacks per shape
                rec.fmt_note = "gptq"
                stacked[name] = (w, H, coded[name].s, bits_of(fmt))
        records.append(rec)
    for name, q in zip(stacked, gptq_many(list(stacked.values()))):
        coded[name].q = q
    for name, c in coded.items():
        w = state[name].detach().cpu().reshape(state[name].shape[0], -1)
        err[name] = (w.float() - reconstruct(c, w.shape[1])).norm().item()
    by_name = {rec.name: rec for rec in records}
    for name in sorted(err, key=lambda n: -err[n])[:cfg.lqer_top]:  # LQER: the largest errors first
        w = state[name].detach().cpu().reshape(state[name].shape[0], -1).float()
        c = coded[name]
        trial = dataclasses.replace(c)
        trial.lqer_a, trial.lqer_as, trial.lqer_b, trial.lqer_bs = low_rank_factors(
            w - reconstruct(c, w.shape[1]), cfg.lqer_rank, cfg.lqer_a_bits, cfg.lqer_b_bits)
        if (w - reconstruct(trial, w.shape[1])).norm().item() < err[name]:
            coded[name] = trial
            by_name[name].fmt_note = "+".join(filter(None, [by_name[name].fmt_note, "lqer"]))
    if cfg.sort_rows:
        for name, c in coded.items():
            if 2 < c.q.shape[0] <= 1 << 16:  # the order is stored as uint16
                c.order = similarity_order(c.q)
                c.q = c.q[c.order].contiguous()
                by_name[name].fmt_note = "+".join(filter(None, [by_name[name].fmt_note, "sorted"]))
    sections: dict[str, list] = {k: [] for k in _SECTIONS}  # (rec, where, bytes); where: None = offset/nbytes
    recon: dict[str, Tensor] = {}
    for rec in records:
        t = state[rec.name].detach().cpu()
        denom = t.float().norm().item()
        if rec.name in coded:
            c = coded[rec.name]
            r = reconstruct(c, t.reshape(t.shape[0], -1).shape[1])
            recon[rec.name] = r.reshape(t.shape)
            rec.rel_error = (t.float() - recon[rec.name]).norm().item() / denom if denom > 0 else 0.0
            sections["codes"].append((rec, None, c.q.numpy().tobytes()))
            sections["scales"].append((rec, "scale", c.s.numpy().tobytes()))
            if c.awq_cols is not None:
                rec.side["awq"] = {"bits": c.awq_bits, "n": int(c.awq_cols.numel()),
                                   "saliency": "hessian" if "awq-hessian" in rec.fmt_note else "colnorm"}
                sections["awq_codes"].append((rec, ("awq", "q"), c.awq_q.numpy().tobytes()))
                sections["side_scales"].append((rec, ("awq", "s"), c.awq_s.numpy().tobytes()))
                sections["index"].append((rec, ("awq", "cols"), _u16(c.awq_cols)))
            if c.lqer_a is not None:
                rec.side["lqer"] = {"rank": int(c.lqer_a.shape[1]), "a_bits": cfg.lqer_a_bits,
                                    "b_bits": cfg.lqer_b_bits, "group": LQER_GROUP}
                sections["lqer_a"].append((rec, ("lqer", "a"), c.lqer_a.numpy().tobytes()))
                sections["lqer_b"].append((rec, ("lqer", "b"), c.lqer_b.numpy().tobytes()))
                sections["side_scales"].append((rec, ("lqer", "as"), c.lqer_as.numpy().tobytes()))
                sections["side_scales"].append((rec, ("lqer", "bs"), c.lqer_bs.numpy().tobytes()))
            if c.order is not None:
                sections["index"].append((rec, ("order",), _u16(c.order)))
        elif rec.fmt == "raw":
            sections["floats"].append((rec, None, t.contiguous().numpy().tobytes()))
        else:
            st = t.to(_STORE_DTYPE[rec.fmt])
            rec.rel_error = (t.float() - st.float()).norm().item() / denom if denom > 0 else 0.0
            sections["floats"].append((rec, None, st.contiguous().view(
                torch.int16 if rec.fmt == "fp16" else torch.int32).numpy().tobytes()))
    blob = io.BytesIO()
    cuts = []  # where each stream of like bytes begins: codes of one width, each side section, scales, floats
    sections["codes"].sort(key=lambda e: bits_of(e[0].fmt))  # stable: original order within a width
    for sec in _SECTIONS:
        for i, (rec, where, b) in enumerate(sections[sec]):
            if i == 0 or (sec == "codes" and rec.fmt != sections[sec][i - 1][0].fmt):
                cuts.append(blob.tell())
            if where is None:
                rec.offset, rec.nbytes = blob.tell(), len(b)
            elif where == "scale":
                rec.scale_offset, rec.scale_nbytes = blob.tell(), len(b)
            elif len(where) == 1:
                rec.side[where[0]] = [blob.tell(), len(b)]
            else:
                rec.side[where[0]][where[1]] = [blob.tell(), len(b)]
            blob.write(b)
        cuts.append(blob.tell())
    header = {
        "format": VERSION_SIDE if any(rec.side for rec in records) else VERSION,
        "model": model_config,
        "meta": meta or {},
        "tensors": [rec.to_header() for rec in records],
    }
    hb = json.dumps(header, separators=(",", ":")).encode()
    payload = struct.pack("<I", len(hb)) + hb + blob.getvalue()
    return QuantResult(header, payload, records, sorted({4 + len(hb) + c for c in cuts}), recon)


def fit_ladder(cfg: QuantConfig):
    """The policy, then the same with one bit less at a time, down to int4, in ``cfg.fit_order``: each group all
    the way down before the next (default: MLP, then attention, other, embedding), or with ``cfg.fit_round_robin``
    one bit from each group in turn. Float formats and groups not named in the order are left as they are."""
    def lower(c, group):
        f = getattr(c, group)
        if f.startswith("int") and bits_of(f) > 4:
            return dataclasses.replace(c, **{group: f"int{bits_of(f) - 1}"})
        return None

    cur = cfg
    yield cur
    if cfg.fit_round_robin:
        moved = True
        while moved:
            moved = False
            for group in cfg.fit_order:
                nxt = lower(cur, group)
                if nxt is not None:
                    cur, moved = nxt, True
                    yield cur
        return
    for group in cfg.fit_order:
        while (nxt := lower(cur, group)) is not None:
            cur = nxt
            yield cur


def quantize_to_budget(state: dict[str, Tensor], cfg: QuantConfig, model_config: dict, meta: dict,
                       code_bytes: int, log=print, hessians: dict[str, Tensor] | None = None
                       ) -> tuple[QuantResult, QuantConfig, bytes]:
    """Quantize and encode; with ``cfg.fit_budget``, walk ``fit_ladder`` until code + model fit the budget.
    Returns the result, the policy used and the encoded artifact (the last attempt if nothing fits)."""
    quantize_s = compress_s = 0.0
    for attempt in budget_attempts(cfg):
        t0 = time.perf_counter()
        result = quantize_state(state, attempt, model_config, meta, hessians)
        t1 = time.perf_counter()
        data = encode(result, attempt)
        quantize_s, compress_s = quantize_s + t1 - t0, compress_s + time.perf_counter() - t1
        result.quantize_s, result.compress_s = quantize_s, compress_s
        if len(data) + code_bytes <= cfg.budget_bytes:
            break
        if cfg.fit_budget:
            log(f"artifact: {len(data) + code_bytes:,} bytes with {policy_of(attempt)} is over "
                f"{cfg.budget_bytes:,}; trying one bit less")
    return result, attempt, data


def budget_attempts(cfg: QuantConfig):
    """The policies the export tries in turn: the fit ladder with ``fit_budget``, else the policy alone."""
    return fit_ladder(cfg) if cfg.fit_budget else [cfg]


def encode(result: QuantResult, cfg: QuantConfig) -> bytes:
    """The artifact's bytes: MAGIC, version 2 (3 with side buffers), the piece count, then per piece (compressor
    id u8, length u32, the compressed bytes). The payload is cut where its streams of like bytes begin (header,
    codes of each width, side sections, scales, floats), and each stream into pieces of at most ``PIECE_BYTES``;
    each piece is compressed alone, with the policy's compressor, or with ``auto`` the smallest of zstd-22,
    brotli-11 and lzma-9 for that piece. The pieces are compressed on a thread pool (zstd, brotli and lzma release
    the GIL), and the bytes do not depend on the thread count. On a trained 14.7 MB model brotli-11 took 84 s on the
    GPU host's CPU in whole streams on one thread (session 9), 3.7-4.2 s in pieces on 16 (session 10). On a 2.1 MB
    artifact, 1 MiB pieces came out 0.05% smaller with brotli-11 and 0.02% with zstd-22 than its whole streams; on
    14 MB of int6-like bytes brotli-11 took 18.6 s whole and 10.7 s in pieces on one thread, 0.003% larger."""
    p = result.payload
    cuts = sorted({0, len(p), *(c for c in result.streams if 0 < c < len(p))})
    size = max(PIECE_BYTES, -(-len(p) // MAX_PIECES))  # the piece count is one byte
    pieces = [(at, min(at + size, b)) for a, b in zip(cuts, cuts[1:]) for at in range(a, b, size)]
    choices = AUTO if cfg.compressor == "auto" else {cfg.compressor: cfg.level}
    names = [c for c in choices if _available(c)] or list(choices)  # none available: compress() says which to install

    def piece(ab: tuple[int, int]) -> bytes:
        comp, name = min((compress(p[ab[0]:ab[1]], c, choices[c]), c) for c in names)
        return struct.pack("<BI", COMPRESSORS[name], len(comp)) + comp

    with ThreadPoolExecutor(max_workers=max(1, min(len(pieces), os.cpu_count() or 1))) as pool:
        parts = list(pool.map(piece, pieces))
    assert len(parts) < 256, len(parts)
    return MAGIC + bytes([result.header.get("format", VERSION), len(parts)]) + b"".join(parts)


def _available(compressor: str) -> bool:
    mod = {"zstd": "zstandard", "brotli": "brotli"}.get(compressor)
    if mod is None:
        return True
    import importlib.util

    return importlib.util.find_spec(mod) is not None


def save_artifact(path: str | os.PathLike, result: QuantResult, cfg: QuantConfig) -> int:
    """Encode and write atomically; return the file's bytes."""
    return atomic_write(path, encode(result, cfg))


def read_payload(path: str | os.PathLike) -> tuple[dict, memoryview, int]:
    """Validate and decompress an artifact: (header, body buffers, compressor id), without dequantizing."""
    path = str(path)
    if not os.path.isfile(path):
        raise ArtifactError(f"{path}: no such artifact")
    raw = Path(path).read_bytes()
    if len(raw) < 7 or raw[:5] != MAGIC:
        raise ArtifactError(f"{path}: not a pgolf artifact (bad magic)")
    if raw[5] == 1:  # one stream
        payload, cid = decompress(raw[7:], raw[6], path), raw[6]
    elif raw[5] in (VERSION, VERSION_SIDE):  # the same container
        parts, at, sizes = [], 7, {}
        for _ in range(raw[6]):
            if at + 5 > len(raw):
                raise ArtifactError(f"{path}: truncated stream table")
            c, n = struct.unpack("<BI", raw[at:at + 5])
            if at + 5 + n > len(raw):
                raise ArtifactError(f"{path}: truncated stream")
            parts.append(decompress(raw[at + 5:at + 5 + n], c, path))
            sizes[c] = sizes.get(c, 0) + n
            at += 5 + n
        payload, cid = b"".join(parts), max(sizes, key=sizes.get)  # the compressor of most bytes
    else:
        raise ArtifactError(f"{path}: artifact format {raw[5]} not supported (this pgolf reads 1, 2 and 3)")
    if len(payload) < 4:
        raise ArtifactError(f"{path}: truncated payload")
    (hlen,) = struct.unpack("<I", payload[:4])
    try:
        header = json.loads(payload[4:4 + hlen])
    except Exception:
        raise ArtifactError(f"{path}: corrupt header") from None
    return header, memoryview(payload)[4 + hlen:], cid


def side_buffers(rec: dict) -> list[list[int]]:
    """[offset, bytes] of a header record's AWQ / LQER / row-order buffers (none in a format-2 record)."""
    return [rec["awq"][k] for k in ("cols", "q", "s") if "awq" in rec] + \
        [rec["lqer"][k] for k in ("a", "as", "b", "bs") if "lqer" in rec] + ([rec["order"]] if "order" in rec else [])


def _coded(rec: dict, body: memoryview, path: str) -> Coded:
    """An integer tensor's stored buffers (format 2 or 3 record) as a ``Coded``."""
    def buf(at: list[int], dtype, *shape) -> Tensor:
        b = body[at[0]:at[0] + at[1]]
        if len(b) != at[1]:
            raise ArtifactError(f"{path}: tensor {rec['name']} runs past the payload")
        if dtype == "u16":
            return torch.from_numpy(numpy.frombuffer(b, dtype="<u2").astype("int64"))
        return torch.frombuffer(bytearray(b), dtype=dtype).reshape(*shape)

    R = rec["shape"][0]
    c = Coded(buf([rec["offset"], rec["nbytes"]], torch.int8, R, -1),
              buf([rec["scale_offset"], rec["scale_nbytes"]], torch.float16, -1))
    if "awq" in rec:
        a = rec["awq"]
        c.awq_cols, c.awq_q = buf(a["cols"], "u16"), buf(a["q"], torch.int8, R, -1)
        c.awq_s, c.awq_bits = buf(a["s"], torch.float16, -1), a["bits"]
    if "lqer" in rec:
        lq = rec["lqer"]
        c.lqer_a, c.lqer_as = buf(lq["a"], torch.int8, R, -1), buf(lq["as"], torch.float16, -1)
        c.lqer_b = buf(lq["b"], torch.int8, lq["rank"], -1)
        c.lqer_bs = buf(lq["bs"], torch.float16, lq["rank"], -1)
    if "order" in rec:
        c.order = buf(rec["order"], "u16")
    return c


def read_artifact(path: str | os.PathLike) -> tuple[dict, dict[str, Tensor]]:
    """Decompress and dequantize: returns (header, state dict with the original dtypes)."""
    header, body, _ = read_payload(path)
    state: dict[str, Tensor] = {}
    for rec in header["tensors"]:
        shape, fmt = rec["shape"], rec["fmt"]
        dtype = getattr(torch, rec["dtype"])
        buf = body[rec["offset"]:rec["offset"] + rec["nbytes"]]
        if len(buf) != rec["nbytes"]:
            raise ArtifactError(f"{path}: tensor {rec['name']} runs past the payload")
        if 0 in shape:  # nothing stored (torch.frombuffer refuses an empty buffer)
            t = torch.empty(shape, dtype=dtype)
        elif fmt.startswith("int"):
            t = reconstruct(_coded(rec, body, path), math.prod(shape[1:])).reshape(shape).to(dtype)
        elif fmt == "raw":
            t = torch.frombuffer(bytearray(buf), dtype=dtype).reshape(shape).clone()
        else:
            st = _STORE_DTYPE[fmt]
            t = torch.frombuffer(bytearray(buf), dtype=st).reshape(shape).to(dtype)
        state[rec["name"]] = t
    return header, state


def policy_of(cfg: QuantConfig) -> dict[str, str]:
    return {g: getattr(cfg, g) for g in QUANT_GROUPS}
