"""The GPT of the challenge baseline, with every seed technique as a switch of ``ModelConfig``.

Baseline: tied embeddings, RMS-normed input, blocks of (resid_mix with x0, GQA attention with RMS-normed q/k,
RoPE and a learned per-head q gain, relu^2 MLP), U-Net skips with learned per-dim weights, logit softcap.
Switches: SmearGate, BigramHash, OrthoInit, MLP width, partial/NTK RoPE, XSA, LN scale, LeakyReLU^2, QAT, the
document mask, and the later records' (attention gate, parallel lanes, depth recurrence).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import ModelConfig

# Small tensors that steer the residual stream: kept fp32 in the model and in the artifact.
CONTROL_PATTERNS = ("attn_scale", "mlp_scale", "resid_mix", "q_gain", "skip_weights", "skip_gates", "smear",
                    "bigram.scale", "attn_gate", "lane_post", "lane_resid", "value_embed.scale")
# Token tables besides the tied embedding: lookups (no matmul FLOPs), with the embeddings in the optimizer.
LOOKUP_TABLES = ("bigram.embed.weight", "value_embed.embed.weight")


def _fa3():
    try:
        from flash_attn_interface import flash_attn_func  # FlashAttention 3 (Hopper)

        return flash_attn_func
    except Exception:
        return None


# what "auto" takes, the first available: measured fastest first (BENCHMARKS: attention backends; cuDNN's SDPA beat
# flash by 10% per training step of `best` on an H100)
ATTENTION_AUTO_ORDER = ("fa3", "cudnn", "flash")


def resolve_attention(choice: str, device: torch.device, doc_mask: bool = False) -> str:
    """The exact attention kernel a run uses, chosen once: fa3 (FlashAttention 3, when importable), or one SDPA
    backend -- cudnn, flash, or sdpa (PyTorch's own pick). On CPU always sdpa. Sets SDPA's global backend flags.
    With ``model.doc_mask``: flex (FlexAttention with a block mask in compiled training forwards on CUDA of up to
    FLEX_MAX_TOKENS; evals, larger batches and eager forwards take a dense mask through SDPA: ``_flex``) or sdpa (a
    dense mask everywhere)."""
    if device.type != "cuda":
        if choice == "fa3":
            raise RuntimeError("model.attention=fa3 but flash_attn_interface is not importable (or no CUDA)")
        return "sdpa"
    if doc_mask:  # ModelConfig admits only auto or sdpa with it
        choice = "flex" if choice == "auto" else "sdpa"
    if choice == "fa3" and _fa3() is None:
        raise RuntimeError("model.attention=fa3 but flash_attn_interface is not importable")
    if choice == "auto":
        choice = next(b for b in ATTENTION_AUTO_ORDER if b != "fa3" or _fa3() is not None)
        if choice == "cudnn" and not torch.backends.cudnn.is_available():
            choice = "flash"
    from torch.backends.cuda import enable_cudnn_sdp, enable_flash_sdp, enable_math_sdp, enable_mem_efficient_sdp

    any_sdpa = choice in ("sdpa", "flex")  # flex's eager forwards use SDPA with a dense mask
    enable_flash_sdp(any_sdpa or choice == "flash")
    enable_cudnn_sdp(any_sdpa or choice == "cudnn")
    enable_mem_efficient_sdp(any_sdpa)
    enable_math_sdp(any_sdpa)
    return choice


_CUDNN_GQA: dict[int, bool] = {}


def cudnn_takes_gqa() -> bool:
    """Whether this torch's cuDNN SDPA runs grouped K/V heads itself (``enable_gqa``, no copy of K/V per head):
    probed once per process and GPU on a toy problem, forward and backward, under the cuDNN backend alone. torch 2.11
    on an H200 takes it: one layer of 48 x 2,048 tokens, 8 query / 4 K/V heads of 64, 2.13 ms fwd+bwd against 2.48
    with the copy (BENCHMARKS, session 19)."""
    if not torch.cuda.is_available():
        return False
    dev = torch.cuda.current_device()
    if dev not in _CUDNN_GQA:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        try:
            q = torch.randn(1, 4, 128, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True)
            kv = torch.randn(1, 2, 128, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True)
            with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                F.scaled_dot_product_attention(q, kv, kv, is_causal=True, enable_gqa=True).sum().backward()
            torch.cuda.synchronize()
            _CUDNN_GQA[dev] = True
        except Exception:
            _CUDNN_GQA[dev] = False
    return _CUDNN_GQA[dev]


class CastedLinear(nn.Linear):
    """fp32 master weight, cast to the activation dtype at the matmul.

    Delayed QAT: with a ``fake_quant`` function (``pgolf.quant.qat_function``: the export's own quantizer in the
    tensor's storage format) and QAT on, the forward computes with exactly the weights the artifact will hold, and a
    straight-through gradient: ``where(on, qat_weight, w) + (w - w.detach())`` (the last term is 0 in value and 1 in
    gradient). ``qat_weight`` is filled by ``GPT.refresh_qat`` once per step, eagerly, by the very function the
    export calls -- so the values agree bit for bit with the export, nothing of the quantizer is compiled, and
    nothing is computed before QAT fires.
    NOTE: torch.compile folds Python flags into constants, so the switch ``qat_alpha`` is a tensor buffer
    (non-persistent), filled in place by ``GPT.set_qat_alpha``; it can never be compiled away.
    """

    def __init__(self, in_features: int, out_features: int, zero_init: bool = False):
        super().__init__(in_features, out_features, bias=False)
        self.zero_init = zero_init
        self.fake_quant: Callable[[Tensor], Tensor] | None = None
        self.register_buffer("qat_alpha", torch.zeros(()), persistent=False)
        self.register_buffer("qat_weight", None, persistent=False)

    def effective_weight(self) -> Tensor:
        """The weight the forward multiplies by: the master weight, or under QAT the export's grid with a
        straight-through gradient."""
        w = self.weight
        if self.fake_quant is not None:
            wd = w.detach()
            w = torch.where(self.qat_alpha > 0, self.qat_weight, wd) + (w - wd)
        return w

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.effective_weight().to(x.dtype))


class SoftcapCrossEntropy(torch.autograd.Function):
    """mean over rows of cross-entropy(c * tanh(h w^T / c), targets), computed ``chunk`` rows at a time: the
    (N, V) float32 logits never exist whole. The forward computes the gradients too (row by row they need nothing
    the next chunk changes) and the backward scales them, so no chunk's logits are kept for the backward.
    Same arithmetic as the plain path per element: logits h w^T in h's dtype, then float32 softcap and softmax
    (float64 for float64 inputs); h (N, D) in the activation dtype, w (V, D) the master weight (its gradient summed
    over chunks in float32 or wider)."""

    @staticmethod
    def forward(ctx, h: Tensor, w: Tensor, targets: Tensor, cap: float, chunk: int) -> Tensor:
        n = h.shape[0]
        acc = torch.promote_types(h.dtype, torch.float32)  # float32 (float64 for float64 inputs)
        wc = w.to(h.dtype)
        grad_h = torch.empty_like(h)
        grad_w = torch.zeros(w.shape, dtype=torch.promote_types(w.dtype, torch.float32), device=w.device)
        total = torch.zeros((), dtype=acc, device=h.device)
        for i in range(0, n, chunk):
            hc, tc = h[i:i + chunk], targets[i:i + chunk]
            t = torch.tanh(F.linear(hc, wc).to(acc) / cap)
            logits = cap * t
            lse = torch.logsumexp(logits, dim=-1)
            total = total + (lse - logits.gather(1, tc[:, None]).squeeze(1)).sum()
            g = torch.exp(logits - lse[:, None])  # softmax
            g.scatter_add_(1, tc[:, None], torch.full_like(lse[:, None], -1.0))
            g = (g * (1.0 - t * t) / n).to(h.dtype)  # through the softcap, and the mean's 1/N
            grad_h[i:i + chunk] = g @ wc
            grad_w += (g.t() @ hc).to(grad_w.dtype)
        ctx.save_for_backward(grad_h, grad_w)
        ctx.w_dtype = w.dtype
        return total / n

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        grad_h, grad_w = ctx.saved_tensors
        return grad_h * grad_out.to(grad_h.dtype), (grad_w * grad_out).to(ctx.w_dtype), None, None, None


def rotary_cos_sin(seq_len: int, dims: int, base: float, device, ntk_ref_len: int = 0,
                   trained_len: int = 0) -> tuple[Tensor, Tensor]:
    """RoPE tables (T, dims/2). NTK-aware (``ntk_ref_len`` > 0): base * s^(d/(d-2)) with s = L / ntk_ref_len when
    L > ntk_ref_len, where L = max(seq_len, trained_len): a window shorter than the training context uses the base
    the model trained with, never one it did not see."""
    length = max(seq_len, trained_len)
    if ntk_ref_len and length > ntk_ref_len:
        base = base * (length / ntk_ref_len) ** (dims / (dims - 2))
    inv_freq = 1.0 / (base ** (torch.arange(0, dims, 2, dtype=torch.float32, device=device) / dims))
    freqs = torch.outer(torch.arange(seq_len, dtype=torch.float32, device=device), inv_freq)
    return freqs.cos(), freqs.sin()


class RotaryTable(nn.Module):
    """``rotary_cos_sin`` of the training context, computed once (on the CPU, moved with the model; float32 buffers
    kept out of the state dict, float32 under ``apply_precision`` too): a window of T <= train_seq_len takes its
    first T rows, which are the very values ``rotary_cos_sin(T, ...)`` gives (the base is fixed by the training
    context, and row t depends only on t and the base); longer windows are computed. Compiled, a table is read
    where the per-forward computation had each attention's fused kernel evaluate pow, cos and sin per element
    (pgolf bench, H200: the fused kernels' class 1.4 GPU ms a step less on pr164-s64, session 19)."""

    def __init__(self, dims: int, base: float, ntk_ref_len: int, trained_len: int):
        super().__init__()
        self.dims, self.base, self.ntk_ref_len, self.trained_len = dims, base, ntk_ref_len, trained_len
        self.register_buffer("cos", None, persistent=False)
        self.register_buffer("sin", None, persistent=False)
        self.build()

    def build(self) -> None:
        """The tables, float32, on the device they are on (the CPU at first): ``apply_precision`` rebuilds them
        after casting the model, since float32 -> bfloat16 -> float32 would lose their low bits."""
        if not self.trained_len:
            return
        device = self.cos.device if self.cos is not None else "cpu"
        cos, sin = rotary_cos_sin(self.trained_len, self.dims, self.base, "cpu", self.ntk_ref_len, self.trained_len)
        self.cos, self.sin = cos.to(device), sin.to(device)

    def forward(self, T: int, device) -> tuple[Tensor, Tensor]:
        if self.cos is not None and T <= self.cos.size(0):
            return self.cos[:T], self.sin[:T]
        return rotary_cos_sin(T, self.dims, self.base, device, self.ntk_ref_len, self.trained_len)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor, dims: int) -> Tensor:
    """x: (B, T, H, D); rotates the first ``dims`` of D (half-split rotation), leaves the rest."""
    cos = cos[None, :, None, :].to(x.dtype)
    sin = sin[None, :, None, :].to(x.dtype)
    rot, rest = x[..., :dims], x[..., dims:]
    half = dims // 2
    x1, x2 = rot[..., :half], rot[..., half:]
    out = torch.cat((x1 * cos + x2 * sin, x2 * cos - x1 * sin), dim=-1)
    return torch.cat((out, rest), dim=-1) if rest.numel() else out


# FlexAttention's limits, measured (H200, torch 2.11, the frontier model compiled, 2048-token windows): in training
# forwards 48 windows a call run (2,000+ steps), 64, 128 and 256 fail with "CUDA error: operation not supported on
# global/shared address space" (BENCHMARKS, session 9); in the model's no-grad eval forward 48 windows failed the
# same way (session 10), where the bare kernel had run. Training micro-batches are held to the limit (train.py);
# every eval forward and larger batches take the dense mask through SDPA (measured at 256 windows a call).
FLEX_MAX_TOKENS = 98_304


def _flex(backend: str, n_tokens: int) -> bool:
    """FlexAttention only where it is fast and measured to work: compiled training forwards (gradients on) of at
    most FLEX_MAX_TOKENS; eager forwards, evals and larger batches take the same mask dense through SDPA. Decided
    once per forward, by ``document_mask``: the attention follows the form of the mask it is given."""
    return backend == "flex" and torch.compiler.is_compiling() and torch.is_grad_enabled() and \
        n_tokens <= FLEX_MAX_TOKENS


def document_mask(ids: Tensor, bos_id: int, backend: str):
    """Causal attention within documents (a document starts at each BOS and runs to the next): FlexAttention's
    block mask, or a dense boolean (B, 1, T, T) for SDPA. Positions keep their place in the window (RoPE is
    relative: a document's scores do not depend on where it starts)."""
    B, T = ids.shape
    docs = torch.cumsum((ids == bos_id).to(torch.int32), dim=1)
    if _flex(backend, B * T):
        from torch.nn.attention.flex_attention import create_block_mask

        def same_doc_causal(b, h, q, k):
            return (k <= q) & (docs[b, q] == docs[b, k])

        return create_block_mask(same_doc_causal, B, None, T, T, device=ids.device)
    pos = torch.arange(T, device=ids.device)
    return ((pos[:, None] >= pos[None, :]) & (docs[:, :, None] == docs[:, None, :])).unsqueeze(1)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        d, hd = cfg.model_dim, cfg.head_dim
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, hd
        self.rope_dims = cfg.rope_dims or hd
        self.c_q = CastedLinear(d, d)
        self.c_k = CastedLinear(d, cfg.num_kv_heads * hd)
        self.c_v = CastedLinear(d, cfg.num_kv_heads * hd)
        self.proj = CastedLinear(d, d, zero_init=True)
        self.q_gain = nn.Parameter(torch.full((cfg.num_heads,), cfg.qk_gain_init, dtype=torch.float32))
        self.xsa = layer >= cfg.num_layers - cfg.xsa_last_n
        self.backend = "sdpa"  # fa3 | cudnn | flash | sdpa | flex (see resolve_attention)
        self.cudnn_gqa = False  # cuDNN takes grouped K/V heads itself (cudnn_takes_gqa), else they are copied
        # sparse output gate (2026-04-16 PR #1667 / 04-23 #1787): head h scaled by 2 sigmoid(W_h . x[:k]); W = 0 at
        # init, so the gate starts at 1 and the block at what it was without it
        k = cfg.attn_gate_window
        self.attn_gate = nn.Parameter(torch.zeros(cfg.num_heads, k)) if k else None

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, lora=None, layer: int = 0, mask=None,
                ve: Tensor | None = None) -> Tensor:
        B, T, _ = x.shape
        q, k, v = self.c_q(x), self.c_k(x), self.c_v(x)
        if lora is not None:  # TTT's adapters (evaluate.TTTAdapters): each adds where it has one
            q, k, v = lora.add("q", layer, x, q), lora.add("k", layer, x, k), lora.add("v", layer, x, v)
        if ve is not None:  # the shared value embedding of this layer (model.ve_layers)
            v = v + ve.to(v.dtype)
        q = q.view(B, T, self.num_heads, self.head_dim)
        k = k.view(B, T, self.num_kv_heads, self.head_dim)
        v = v.view(B, T, self.num_kv_heads, self.head_dim)
        q = F.rms_norm(q, (self.head_dim,))
        k = F.rms_norm(k, (self.head_dim,))
        q = apply_rotary(q, cos, sin, self.rope_dims)
        k = apply_rotary(k, cos, sin, self.rope_dims)
        q = q * self.q_gain.to(q.dtype)[None, None, :, None]
        gqa = self.num_kv_heads != self.num_heads
        if mask is not None and not torch.is_tensor(mask):  # a BlockMask: document_mask chose FlexAttention
            from torch.nn.attention.flex_attention import flex_attention

            y = flex_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), block_mask=mask,
                               enable_gqa=gqa).transpose(1, 2)
        elif mask is not None:
            y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                               attn_mask=mask, enable_gqa=gqa).transpose(1, 2)
        elif self.backend == "fa3":
            y = _fa3()(q, k, v, causal=True)
            y = y[0] if isinstance(y, tuple) else y
        else:
            kk, vv = k, v
            if gqa and self.backend == "cudnn" and not self.cudnn_gqa:  # give every head its K/V
                g = self.num_heads // self.num_kv_heads
                kk, vv = k.repeat_interleave(g, dim=2), v.repeat_interleave(g, dim=2)
                gqa = False
            y = F.scaled_dot_product_attention(
                q.transpose(1, 2), kk.transpose(1, 2), vv.transpose(1, 2), is_causal=True, enable_gqa=gqa,
            ).transpose(1, 2)  # (B, T, H, D)
        if self.attn_gate is not None:  # (B, T, H, 1) from the block's normed input
            y = y * (2.0 * torch.sigmoid(x[..., :self.attn_gate.size(1)] @ self.attn_gate.to(x.dtype).T))[..., None]
        if self.xsa:  # remove each head's component along its own token's value direction (arXiv:2603.09078)
            g = self.num_heads // self.num_kv_heads
            yg = y.reshape(B, T, self.num_kv_heads, g, self.head_dim)
            vn = F.normalize(v, dim=-1).unsqueeze(-2)
            y = (yg - (yg * vn).sum(-1, keepdim=True) * vn).reshape(B, T, self.num_heads, self.head_dim)
        y = y.reshape(B, T, self.num_heads * self.head_dim)
        return self.proj(y) if lora is None else lora.add("o", layer, y, self.proj(y))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.fc = CastedLinear(cfg.model_dim, cfg.hidden_dim)
        self.proj = CastedLinear(cfg.hidden_dim, cfg.model_dim, zero_init=True)
        self.leaky = cfg.activation == "leaky_relu2"

    def forward(self, x: Tensor) -> Tensor:
        h = self.fc(x)
        h = F.leaky_relu(h, 0.5) if self.leaky else torch.relu(h)
        return self.proj(h.square())


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        d = cfg.model_dim
        # model.no_attn_layers: an MLP-only block (the 03-31 record's layer 0), without the attention's tensors
        self.attn = Attention(cfg, layer) if layer not in cfg.no_attn_layers else None
        self.mlp = MLP(cfg)
        # model.recur_untie_mlp: the MLPs of this looped layer's extra passes (zero until the recurrence starts)
        untied = cfg.recur_untie_mlp and cfg.recur_from <= layer < cfg.recur_to
        self.mlp_repeats = nn.ModuleList(MLP(cfg) for _ in range(cfg.recur_loops - 1)) if untied else None
        self.attn_scale = nn.Parameter(torch.ones(d)) if self.attn is not None else None
        self.mlp_scale = nn.Parameter(torch.ones(d))
        self.resid_mix = nn.Parameter(torch.stack((torch.ones(d), torch.zeros(d))))
        self.norm_scale = 1.0 / math.sqrt(layer + 1) if cfg.ln_scale else 1.0
        # GPT-J-style parallel block (2026-04-06): attention and MLP both read the same normed input
        self.parallel = 0 <= cfg.parallel_from <= layer
        # two lanes (2026-03-31 #1204, 04-27): attention reads lane 0, the MLP lane 1, and each writes into both
        self.lanes = cfg.parallel_lanes if self.parallel else 1
        self.lane_form = cfg.lane_form
        if self.lanes == 2:
            self.lane_post = nn.Parameter(torch.ones(2, 2))  # [attention, MLP] output -> [lane 0, lane 1]
            # the carry-over: each lane's (04-27), or each sublayer's on both lanes (03-31, ``model.lane_form``)
            self.lane_resid = nn.Parameter(torch.full((2,), cfg.lane_resid_init))

    def mlp_of_pass(self, rep: int) -> nn.Module:
        """The MLP of this layer's pass ``rep`` (0 the first; later ones differ only with model.recur_untie_mlp)."""
        return self.mlp if not rep or self.mlp_repeats is None else self.mlp_repeats[rep - 1]

    def forward_lanes(self, lanes: tuple[Tensor, Tensor], x0: Tensor, cos: Tensor, sin: Tensor, lora=None,
                      layer: int = 0, mask=None, ve: Tensor | None = None, rep: int = 0) -> tuple[Tensor, Tensor]:
        """The two-lane parallel block: attention reads lane 0 (mixed with x0), the MLP reads lane 1, and lane j
        becomes resid[j] lane_j + post[0, j] attention + post[1, j] MLP. With resid and post at 1, resid_mix at its
        init and equal lanes, this is the GPT-J block (``forward``) on either lane (tests/test_techniques.py).
        ``model.lane_form=0331`` (the 2026-03-31 record's lanes): each lane first becomes resid[0] lane_j + post[0, j]
        attention, then the MLP reads lane 1 mixed with x0, and lane j becomes resid[1] lane_j + post[1, j] MLP; at
        the same init this is the sequential block."""
        a_in, m_in = lanes
        mix = self.resid_mix.to(a_in.dtype)
        post, r = self.lane_post.to(a_in.dtype), self.lane_resid.to(a_in.dtype)
        a = self.attn_scale.to(a_in.dtype) * self.attn(self._norm(mix[0] * a_in + mix[1] * x0), cos, sin, lora,
                                                       layer, mask, ve)
        if self.lane_form == "0331":  # sequential: the MLP reads lane 1 with the attention's output in it
            a_in, m_in = r[0] * a_in + post[0, 0] * a, r[0] * m_in + post[0, 1] * a
            m = self.mlp_scale.to(a_in.dtype) * self._mlp(self._norm(mix[0] * m_in + mix[1] * x0), lora, layer, rep)
            return r[1] * a_in + post[1, 0] * m, r[1] * m_in + post[1, 1] * m
        m = self.mlp_scale.to(a_in.dtype) * self._mlp(self._norm(m_in), lora, layer, rep)
        return r[0] * a_in + post[0, 0] * a + post[1, 0] * m, r[1] * m_in + post[0, 1] * a + post[1, 1] * m

    def forward(self, x: Tensor, x0: Tensor, cos: Tensor, sin: Tensor, lora=None, layer: int = 0,
                mask=None, ve: Tensor | None = None, rep: int = 0) -> Tensor:
        mix = self.resid_mix.to(x.dtype)
        x = mix[0] * x + mix[1] * x0
        h = self._norm(x)
        if self.attn is not None:
            x = x + self.attn_scale.to(x.dtype) * self.attn(h, cos, sin, lora, layer, mask, ve)
            if not self.parallel:  # the MLP reads the attention's output (parallel: the same normed input)
                h = self._norm(x)
        return x + self.mlp_scale.to(x.dtype) * self._mlp(h, lora, layer, rep)

    def _norm(self, x: Tensor) -> Tensor:
        """A sublayer's input: RMS-normed, times the LN scale (model.ln_scale)."""
        return F.rms_norm(x, (x.size(-1),)) * self.norm_scale

    def _mlp(self, h: Tensor, lora, layer: int, rep: int) -> Tensor:
        """The MLP of pass ``rep`` on ``h``, plus TTT's adapter where it has one."""
        mlp = self.mlp_of_pass(rep)
        return mlp(h) if lora is None else lora.add("mlp", layer, h, mlp(h))


def _add_skip(x: Tensor, s: Tensor, gate: Tensor | None) -> Tensor:
    """A U-Net skip joins the stream: added, or with sigmoid-gated skips ``lerp(s, x, gate)``."""
    return x + s if gate is None else torch.lerp(s, x, gate)


class SmearGate(nn.Module):
    """Blend each token's embedding with the previous token's; never at position 0 or across a BOS.

    v1 (``smear_window`` 0, the seeds'): x_t <- (1-g) x_t + g x_{t-1}, g = sigmoid(per-dim logit), after the
    embedding norm. v2 (``smear_window`` k > 0, modded-nanogpt; 2026-04-16 PR #1667, BOS fix #1855): x_t <- x_t +
    lam sigmoid(w . x_t[:k]) x_{t-1}, w and lam zero at init (transparent), on the raw embedding before the norm."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.window = cfg.smear_window
        if self.window:
            self.smear_w = nn.Parameter(torch.zeros(self.window))
            self.smear_lam = nn.Parameter(torch.zeros(()))
        else:
            self.smear = nn.Parameter(torch.full((cfg.model_dim,), cfg.smear_init))
        self.bos_id = cfg.bos_id

    def forward(self, x: Tensor, ids: Tensor) -> Tensor:
        keep = (ids[:, 1:] != self.bos_id).unsqueeze(-1).to(x.dtype)  # (B, T-1, 1): 0 where a doc starts
        if self.window:
            g = torch.sigmoid(x[:, 1:, :self.window] @ self.smear_w.to(x.dtype))[..., None]
            delta = keep * self.smear_lam.to(x.dtype) * g * x[:, :-1]
        else:
            g = torch.sigmoid(self.smear).to(x.dtype)
            delta = keep * g * (x[:, :-1] - x[:, 1:])
        return torch.cat((x[:, :1], x[:, 1:] + delta), dim=1)


class BigramHash(nn.Module):
    """Hashed (previous, current) token-pair embedding, projected to the model width and scaled.

    Bucket = (36313*cur XOR 27191*prev) mod (buckets-1); the last bucket marks "no previous token"
    (position 0 and every BOS, so no pair crosses a document boundary).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.buckets, self.bos_id = cfg.bigram_buckets, cfg.bos_id
        self.embed = nn.Embedding(cfg.bigram_buckets, cfg.bigram_dim)
        self.proj = CastedLinear(cfg.bigram_dim, cfg.model_dim, zero_init=True)
        self.scale = nn.Parameter(torch.tensor(0.05))

    def bucket(self, ids: Tensor) -> Tensor:
        prev, cur = ids[:, :-1], ids[:, 1:]
        h = torch.bitwise_xor(36313 * cur, 27191 * prev) % (self.buckets - 1)
        h = torch.where(cur == self.bos_id, torch.full_like(h, self.buckets - 1), h)
        first = torch.full_like(ids[:, :1], self.buckets - 1)
        return torch.cat((first, h), dim=1)

    def forward(self, ids: Tensor) -> Tensor:
        return self.proj(self.embed(self.bucket(ids))) * self.scale


class ValueEmbedding(nn.Module):
    """The shared value embedding (VE128, 2026-03-22 PR #374 to 04-04): one token table (V, ve_dim), projected to the
    attention's K/V width and scaled, added to the values of each layer in ``ve_layers`` with that layer's own
    learned scale: v_i = c_v(x) + s_i (scale proj(embed(ids))). The projection is zero at init, so a model with it
    starts as the model without it (tests/test_techniques.py)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.layers = {layer: j for j, layer in enumerate(cfg.ve_layers)}
        self.embed = nn.Embedding(cfg.vocab_size, cfg.ve_dim)
        self.proj = CastedLinear(cfg.ve_dim, cfg.num_kv_heads * cfg.head_dim, zero_init=True)
        self.scale = nn.Parameter(torch.tensor(0.1))
        self.scales = nn.Parameter(torch.ones(len(cfg.ve_layers)))  # one per layer of ve_layers, in its order

    def forward(self, ids: Tensor) -> Tensor:
        """The shared part, once per forward: (B, T, kv width)."""
        return self.proj(self.embed(ids)) * self.scale

    def for_layer(self, shared: Tensor, layer: int) -> Tensor | None:
        """Layer ``layer``'s share of ``forward``'s output, or None for a layer not in ve_layers."""
        j = self.layers.get(layer)
        return None if j is None else shared * self.scales[j].to(shared.dtype)


def _last_positions(x: Tensor, last: int) -> Tensor:
    """``x[:, -last:]`` as a new contiguous tensor (a view is contiguous only when last == T: code after it would
    branch on that, and a compiled graph with dynamic shapes would keep a guard on it)."""
    T = x.size(1)
    return x.index_select(1, torch.arange(T - last, T, device=x.device))


class GPT(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.vocab_size <= 0:
            raise ValueError("model.vocab_size must be resolved (from the tokenizer) before building the model")
        self.cfg = cfg
        L, d = cfg.num_layers, cfg.model_dim
        self.tok_emb = nn.Embedding(cfg.vocab_size, d)
        self.bigram = BigramHash(cfg) if cfg.bigram_buckets else None
        self.value_embed = ValueEmbedding(cfg) if cfg.ve_dim else None
        self.smear = SmearGate(cfg) if cfg.smear_gate else None
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(L))
        self.attn_backend = "sdpa"  # every attention's kernel (set_attention_backend)
        # depth recurrence: the layer order, plain or with the span recur_from..recur_to-1 passed recur_loops times;
        # ``looped`` switches between them (a Python flag: torch.compile keeps one graph for each)
        self.looped = False
        # set by callers whose every row holds one document (TTT's per-document windows): the document mask is then
        # the causal mask, and the forward takes the causal kernels instead of a dense mask
        self.one_document_rows = False
        longest = len(self.layer_order(True))
        n_skips = min(longest // 2, longest - longest // 2) if cfg.unet_skips else 0
        # U-Net skip weights for the longest order; the plain one uses the first ones. No parameter at all
        # without skips: a (0, d) tensor gets no gradient
        self.skip_weights = nn.Parameter(torch.ones(n_skips, d)) if n_skips else None
        # sigmoid-gated skips (04-01 #1089 onward): x <- lerp(w skip, x, sigmoid(g)), g = 0 at init (half and half)
        self.skip_gates = nn.Parameter(torch.zeros(n_skips, d)) if n_skips and cfg.skip_gates else None
        self.lm_head = None if cfg.tie_embeddings else CastedLinear(d, cfg.vocab_size, zero_init=True)
        # the softcap's (positive, negative) caps where learned: set by phased TTT (``asym_softcap``), whose SGD
        # trains them and which removes them after; never saved or exported, so None everywhere else
        self.register_parameter("softcap_caps", None)
        ref = (cfg.rope_ref_len or cfg.train_seq_len) if cfg.ntk_rope else 0
        self.rotary = RotaryTable(cfg.rope_dims or cfg.head_dim, cfg.rope_base, ref, cfg.train_seq_len)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """Every tensor's initialization, in one place.

        tok_emb: N(0, tied_embed_init_std) when tied, else PyTorch's N(0, 1).
        Linear: PyTorch default U(+-1/sqrt(in)), or zeros for output projections (attn.proj, mlp.proj, untied
          lm_head, bigram.proj). With ortho_init: every non-zero-init matrix with both dims >= 64 is orthogonal,
          and a module whose name contains ".proj" is scaled by 1/sqrt(2 L). As in the seed records, the residual
          output projections stay zero and bigram.proj's zeros are overwritten by the orthogonal init.
        bigram.embed and value_embed.embed: N(0, 0.01); bigram.scale 0.05, value_embed.scale 0.1 (its per-layer
          scales 1; its proj zero, kept zero with ortho_init). Vectors: attn/mlp scales 1, resid_mix (1, 0), q_gain
          qk_gain_init, skip_weights 1, skip_gates 0, smear logit smear_init, two lanes' post 1 and resid
          lane_resid_init.
        """
        cfg = self.cfg
        if cfg.tie_embeddings:
            nn.init.normal_(self.tok_emb.weight, 0.0, cfg.tied_embed_init_std)
        if self.bigram is not None:
            nn.init.normal_(self.bigram.embed.weight, 0.0, 0.01)
        if self.value_embed is not None:
            nn.init.normal_(self.value_embed.embed.weight, 0.0, 0.01)
        for name, m in self.named_modules():
            if not isinstance(m, CastedLinear):
                continue
            if m.zero_init and not (cfg.ortho_init and name == "bigram.proj"):
                nn.init.zeros_(m.weight)
            elif cfg.ortho_init and min(m.weight.shape) >= 64:
                nn.init.orthogonal_(m.weight, gain=1.0)
                if ".proj" in f".{name}":
                    m.weight.mul_(1.0 / math.sqrt(2 * cfg.num_layers))
        for b in self.blocks:  # untied repeats are unused until ``start_recurrence`` copies their layer's MLP
            for r in b.mlp_repeats or ():
                nn.init.zeros_(r.fc.weight)
                nn.init.zeros_(r.proj.weight)

    @torch.no_grad()
    def start_recurrence(self) -> list[tuple[nn.Parameter, nn.Parameter]]:
        """The looped order from now on; with model.recur_untie_mlp each extra pass's MLP starts as a copy of its
        layer's (the model computes the same function at that step, then the copies train on their own). Returns
        the (copy, original) pairs, for whoever keeps state per parameter (the weight average)."""
        self.looped = True
        pairs = [(r_lin.weight, b_lin.weight) for b in self.blocks for r in b.mlp_repeats or ()
                 for r_lin, b_lin in ((r.fc, b.mlp.fc), (r.proj, b.mlp.proj))]
        for dst, src in pairs:
            dst.copy_(src)
        return pairs

    def set_attention_backend(self, backend: str) -> None:
        self.attn_backend = backend
        for b in self.blocks:
            if b.attn is not None:
                b.attn.backend = backend
                b.attn.cudnn_gqa = backend == "cudnn" and cudnn_takes_gqa()

    def attention_label(self) -> str:
        """The attention kernel for the log: the backend, with ``+gqa`` where cuDNN runs the grouped K/V heads itself
        (``cudnn_takes_gqa``) instead of a copy per query head."""
        native = any(b.attn is not None and b.attn.cudnn_gqa for b in self.blocks)
        return self.attn_backend + ("+gqa" if native else "")

    def use_attention(self, device: torch.device) -> str:
        """The kernel this model's config asks for on ``device`` (``resolve_attention`` of model.attention and
        model.doc_mask), set on every block; returned for the log."""
        backend = resolve_attention(self.cfg.attention, device, self.cfg.doc_mask)
        self.set_attention_backend(backend)
        return backend

    def set_qat(self, fake_quant_for: Callable[[str], Callable[[Tensor], Tensor] | None]) -> None:
        """Give each CastedLinear its fake quantization: ``fake_quant_for(weight name)`` -> a function or None."""
        for name, m in self.named_modules():
            if isinstance(m, CastedLinear):
                m.fake_quant = fake_quant_for(name + ".weight")
                m.qat_weight = torch.zeros_like(m.weight) if m.fake_quant is not None else None

    @torch.no_grad()
    def set_qat_alpha(self, value: float) -> None:
        """QAT on (1) or off (0); on, the fake-quantized weights are computed now (and by ``refresh_qat`` after
        every update)."""
        for m in self.modules():
            if isinstance(m, CastedLinear):
                m.qat_alpha.fill_(value)
        if value > 0:
            self.refresh_qat()

    @torch.no_grad()
    def refresh_qat(self) -> None:
        """The current weights, quantized and dequantized by the export's quantizer, into ``qat_weight``."""
        for m in self.modules():
            if isinstance(m, CastedLinear) and m.fake_quant is not None:
                m.qat_weight.copy_(m.fake_quant(m.weight.detach()))

    def embed(self, ids: Tensor) -> Tensor:
        x = self.tok_emb(ids)
        if self.bigram is not None:
            x = x + self.bigram(ids).to(x.dtype)
        if self.smear is not None and self.smear.window:  # v2 reads the raw embedding
            x = self.smear(x, ids)
        x = F.rms_norm(x, (x.size(-1),))
        if self.smear is not None and not self.smear.window:  # v1 (the seeds') blends the normed one
            x = self.smear(x, ids)
        return x

    def layer_order(self, looped: bool) -> list[int]:
        """The physical layers in the order the forward runs them."""
        c = self.cfg
        order = list(range(c.num_layers))
        if looped and c.recur_loops > 1 and c.recur_to > c.recur_from:
            span = list(range(c.recur_from, c.recur_to))
            order = order[:c.recur_to] + span * (c.recur_loops - 1) + order[c.recur_to:]
        return order

    def hidden(self, ids: Tensor, lora=None) -> Tensor:
        T = ids.size(1)
        c = self.cfg
        cos, sin = self.rotary(T, ids.device)
        x = self.embed(ids)
        x0 = x
        ve = self.value_embed(ids) if self.value_embed is not None else None  # shared by its layers
        mask = document_mask(ids, c.bos_id, self.attn_backend) if c.doc_mask and not \
            self.one_document_rows else None
        order = self.layer_order(self.looped)
        n_enc = len(order) // 2 if c.unet_skips else 0
        skips: list[Tensor] = []
        lanes: tuple[Tensor, Tensor] | None = None  # two-lane blocks (model.parallel_lanes=2)
        passes: dict[int, int] = {}  # how often each layer ran so far (its pass picks its MLP when untied)
        for v, i in enumerate(order):
            block = self.blocks[i]
            rep = passes[i] = passes.get(i, -1) + 1
            if lanes is not None and block.lanes == 1:  # back to one stream (a looped span may return to one)
                x, lanes = 0.5 * (lanes[0] + lanes[1]), None
            if v >= n_enc and skips:
                j = v - n_enc
                s = self.skip_weights[j].to(x.dtype) * skips.pop()
                gate = None if self.skip_gates is None else torch.sigmoid(self.skip_gates[j]).to(x.dtype)
                if lanes is None:
                    x = _add_skip(x, s, gate)
                else:  # into lane 0 (04-27), or into both lanes (03-31)
                    lanes = (_add_skip(lanes[0], s, gate),
                             _add_skip(lanes[1], s, gate) if block.lane_form == "0331" else lanes[1])
            ve_i = self.value_embed.for_layer(ve, i) if ve is not None else None
            if block.lanes == 2:
                lanes = block.forward_lanes(lanes or (x, x), x0, cos, sin, lora, i, mask, ve_i, rep)
            else:
                x = block(x, x0, cos, sin, lora, i, mask, ve_i, rep)
            if v < n_enc:
                skips.append(x if lanes is None else 0.5 * (lanes[0] + lanes[1]))
        if lanes is not None:  # the lanes' mean (04-27's default final lane)
            x = 0.5 * (lanes[0] + lanes[1])
        return F.rms_norm(x, (x.size(-1),))

    def head_weight(self) -> Tensor:
        """The output head's weight: the tied embedding, or the untied head's (QAT's grid when on)."""
        return self.tok_emb.weight if self.lm_head is None else self.lm_head.effective_weight()

    def logits(self, ids: Tensor, lora=None, last: int = 0) -> Tensor:
        """Softcapped logits (B, T, V), float32; with ``last`` only those of the last positions (B, last, V)."""
        h = self.hidden(ids, lora)
        if last:  # a copy, contiguous whatever ``last`` is: a compiled graph with dynamic shapes then does not
            h = _last_positions(h, last)  # guard on last == T, and one graph serves every width (TTT)
        out = F.linear(h, self.head_weight().to(h.dtype))  # an untied head with QAT's grid, as its forward
        if lora is not None:
            out = lora.add("head", 0, h, out)
        z = out.float()
        if self.softcap_caps is not None:  # asymmetric: each sign of the logit squashed by its own cap (#1923)
            pos, neg = self.softcap_caps.unbind()
            return torch.where(z > 0, pos * torch.tanh(z / pos), neg * torch.tanh(z / neg))
        c = self.cfg.logit_softcap
        return c * torch.tanh(z / c)

    def forward(self, ids: Tensor, targets: Tensor, reduction: str = "mean", lora=None, last: int = 0) -> Tensor:
        """Cross-entropy in nats: the mean (training) or per token (B, T) with reduction='none'. ``last``: the head
        and the loss only for the last positions (a sliding window scores only those): (B, last). With
        ``model.loss_chunk`` the mean goes through ``SoftcapCrossEntropy`` (the eval and TTT paths never do)."""
        if self.cfg.loss_chunk and reduction == "mean" and lora is None and not last:
            h = self.hidden(ids)
            return SoftcapCrossEntropy.apply(h.reshape(-1, h.size(-1)), self.head_weight(), targets.reshape(-1),
                                             self.cfg.logit_softcap, self.cfg.loss_chunk)
        logits = self.logits(ids, lora, last)
        if last:
            targets = _last_positions(targets, last)
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), reduction=reduction)
        return loss if reduction != "none" else loss.view_as(targets)

    # ---- accounting ----
    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token: 6 x matmul params + causal attention (fwd+bwd), of the plain layer order (a
        loop's extra passes are not counted, with their MLPs tied or untied)."""
        n = sum(p.numel() for n_, p in self.named_parameters()
                if p.ndim == 2 and n_ != "tok_emb.weight" and n_ not in LOOKUP_TABLES and ".mlp_repeats." not in n_)
        n += self.tok_emb.weight.numel()  # the output head
        layers = sum(b.attn is not None for b in self.blocks)
        attn = 6 * layers * seq_len * self.cfg.model_dim  # 12*L*T*d halved for causality
        return 6.0 * n + attn

    # ---- sampling ----
    @torch.no_grad()
    def generate(self, ids: Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int = 0,
                 generator: torch.Generator | None = None) -> Tensor:
        """ids (B, T) -> (B, T + max_new_tokens): sample one token at a time from the softcapped logits.

        temperature 0 is greedy; top_k > 0 keeps the k likeliest tokens. Draws come from ``generator`` (on its own
        device: a seeded CPU generator gives the same tokens for a model on any device) or torch's global RNG.
        The whole context (its last train_seq_len tokens, the length the model trained at) is recomputed every step:
        no KV cache, which would be a second attention path to keep in step with the first, for a small model."""
        ctx = self.cfg.train_seq_len or ids.size(1)
        for _ in range(max_new_tokens):
            logits = self.logits(ids[:, -ctx:])[:, -1]  # (B, V) float32
            if temperature <= 0:
                nxt = logits.argmax(-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k > 0:
                    kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, -1:]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                probs = torch.softmax(logits, -1)
                if generator is not None:
                    probs = probs.to(generator.device)
                nxt = torch.multinomial(probs, 1, generator=generator).to(ids.device)
            ids = torch.cat((ids, nxt), 1)
        return ids


def apply_precision(model: GPT, device: torch.device) -> GPT:
    """CUDA: bf16 embeddings, fp32 CastedLinear weights and control/vector params (as the baseline), fp32 RoPE
    tables. CPU: everything fp32."""
    if device.type != "cuda":
        return model.float()
    model.bfloat16()
    for name, p in model.named_parameters():
        if p.ndim < 2 or any(k in name for k in CONTROL_PATTERNS):
            p.data = p.data.float()
    for m in model.modules():
        if isinstance(m, CastedLinear):
            m.float()
        elif isinstance(m, RotaryTable):
            m.build()
    return model


def compile_options() -> dict:
    """Inductor options for every compile of a model: mix-order reduction off. With it on, torch 2.11's scheduler
    fails an assertion (``not isinstance(node1, FusedMixOrderReductions)``) compiling best-sp8192 with two lanes
    (H200, session 13), and on pr164-s64 it fuses SmearGate v1's per-dim gate gradient with the embedding norm's
    backward into one 3.7 ms kernel: 66.1 ms/step with it, 63.0 without; `best` with one lane 85.2 vs 85.8, noise
    (H200, session 14). The records run with TORCHINDUCTOR_MIX_ORDER_REDUCTION=0."""
    return {"triton.mix_order_reduction": False}


def compile_model(model: GPT, enabled: bool) -> nn.Module:
    """The model compiled whole (one graph, static shapes) where ``enabled``, else the model itself."""
    if not enabled:
        return model
    return torch.compile(model, dynamic=False, fullgraph=True, options=compile_options())
