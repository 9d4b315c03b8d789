"""Typed run configuration: one dataclass per concern, validated on construction.

Every technique is a field here. Recipes (``pgolf.recipes``) are functions that build a ``Config``; the CLI applies
``--set section.field=value`` overrides on top. Unknown keys are errors, never silently ignored.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from dataclasses import dataclass, field
from typing import Any


# Process exit codes, the same for every command (README: exit codes). 1 stays "a traceback", so a script can tell
# an audit that found a rule broken (5) from an audit that crashed.
EXIT_OK, EXIT_ERROR, EXIT_INPUT, EXIT_OVER_BUDGET, EXIT_INTERRUPTED, EXIT_AUDIT_FAIL = 0, 1, 2, 3, 4, 5


class InputError(ValueError):
    """Bad input from the user (a file, a flag, a value): reported as a one-line error naming what is wrong."""


class ConfigError(InputError):
    """A configuration value or key is invalid."""


class OverBudget(InputError):
    """An artifact over the byte budget where the command needs one within it (exit code 3)."""


class Interrupted(Exception):
    """A run stopped by SIGINT/SIGTERM; its summary.json says ``status: interrupted``."""


def _layers(cfg, name: str) -> tuple[int, ...]:
    """A tuple of layer numbers (from ``--set`` text, a config file's list, or a tuple): distinct, in range."""
    raw = getattr(cfg, name)
    parts = raw.split(",") if isinstance(raw, str) else raw
    try:
        layers = tuple(int(v) for v in parts if str(v).strip())
    except ValueError:
        raise ConfigError(f"model.{name}={','.join(map(str, parts))!r}: expected layer numbers, e.g. 0 or 9,10")
    _check(all(0 <= v < cfg.num_layers for v in layers) and len(set(layers)) == len(layers),
           f"model.{name}: {layers} must be distinct layers in [0, num_layers)")
    return layers


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def _at_least(obj, section: str, low: float, *names: str) -> None:
    for name in names:
        v = getattr(obj, name)
        _check(v >= low, f"{section}.{name}={v}: must be >= {low}")


@dataclass
class ModelConfig:
    vocab_size: int = 0  # 0: read from the tokenizer (any SentencePiece vocabulary); > 0: must match it
    num_layers: int = 9  # transformer blocks
    model_dim: int = 512  # residual stream width
    num_heads: int = 8  # attention (query) heads
    num_kv_heads: int = 4  # key/value heads (GQA: num_heads must be a multiple)
    mlp_mult: float = 2.0  # hidden = round(mlp_mult * model_dim) unless mlp_hidden > 0
    mlp_hidden: int = 0  # MLP hidden width; 0 = from mlp_mult
    activation: str = "relu2"  # relu2 | leaky_relu2 (LeakyReLU(0.5)^2)
    tie_embeddings: bool = True  # the LM head is the token embedding
    tied_embed_init_std: float = 0.005  # init std of a tied embedding
    logit_softcap: float = 30.0  # logits = c * tanh(logits / c)
    loss_chunk: int = 0  # training loss fused with the head, this many rows at a time (0 = the plain path)
    rope_base: float = 10000.0  # RoPE base frequency
    rope_dims: int = 0  # rotary dims per head; 0 = the whole head (partial RoPE when smaller)
    ntk_rope: bool = False  # NTK-aware base scaling when a sequence is longer than rope_ref_len
    rope_ref_len: int = 0  # reference length for NTK scaling; 0 = train.seq_len
    train_seq_len: int = 0  # derived: train.seq_len (Config.validate sets it); fixes the RoPE base of shorter windows
    qk_gain_init: float = 1.5  # initial learned per-head query gain
    unet_skips: bool = True  # encoder/decoder skips with learned per-dim weights
    skip_gates: bool = False  # the skips blended in by a learned per-dim sigmoid gate (lerp), not added (04-01 on)
    smear_gate: bool = False  # per-dim sigmoid blend with the previous token's embedding (not across BOS)
    smear_init: float = 0.0  # gate logit at init (sigmoid(0) = 0.5 weight on the previous token)
    smear_window: int = 0  # SmearGate v2: gate from the first k embedding dims (0 = v1's per-dim constant gate)
    attn_gate_window: int = 0  # sparse attention-output gate per head from the first k input dims (0 = off)
    parallel_from: int = -1  # GPT-J-style parallel attention/MLP from this layer on (-1 = off)
    parallel_lanes: int = 1  # 1: both read one stream; 2: attention's and MLP's own residual lanes (03-31, 04-27)
    lane_resid_init: float = 1.1  # two lanes: the learned carry-over at init (04-27: 1.1, one a lane; 03-31:
    # sqrt 1.1, one a sublayer)
    lane_form: str = "0427"  # two lanes: "0427" (the MLP reads lane 1 as the block found it, un-mixed; U-Net skips
    # into lane 0; a carry-over per lane) or "0331" (the MLP reads lane 1 after the attention wrote to it, mixed with
    # x0 like the attention's read; skips into both lanes; a carry-over per sublayer, applied to both lanes)
    recur_from: int = 0  # depth recurrence: layers recur_from..recur_to-1 ...
    recur_to: int = 0  # ... (recur_to > recur_from turns it on) ...
    recur_loops: int = 1  # ... passed this many times (1 = the plain stack), from schedule.recur_start_frac
    recur_untie_mlp: bool = False  # each extra pass of a looped layer has its own MLP, a copy of the layer's when
    # the recurrence starts (the 03-31 record's REPEAT_UNTIE_MLP=full)
    bigram_buckets: int = 0  # BigramHash table size; 0 = off
    bigram_dim: int = 128  # BigramHash embedding width (projected to model_dim)
    ve_dim: int = 0  # shared value embedding (03-22 #374 to 04-04): a token table of this width, projected to the
    # K/V width and added to the attention's values on the layers of ve_layers (0 = off)
    ve_layers: tuple[int, ...] = ()  # the layers whose values get it, each with its own learned scale (e.g. 9,10)
    no_attn_layers: tuple[int, ...] = ()  # layers that are an MLP only, no attention (the 03-31 record ran layer 0 so)
    ortho_init: bool = False  # orthogonal init of large matrices, ".proj" outputs scaled 1/sqrt(2L)
    xsa_last_n: int = 0  # exclusive self-attention on the last N layers (0 = off)
    ln_scale: bool = False  # scale block-norm outputs by 1/sqrt(layer+1)
    attention: str = "auto"  # auto (FA3 when importable, else cuDNN SDPA) | fa3 | cudnn | flash | sdpa (torch picks)
    bos_id: int = 1  # the token that starts every document
    doc_mask: bool = False  # attention never crosses a BOS: each token attends only within its own document

    def __post_init__(self) -> None:
        _check(self.vocab_size >= 0, "model.vocab_size must be >= 0 (0 = from tokenizer)")
        _at_least(self, "model", 1, "num_layers", "model_dim", "num_heads", "num_kv_heads", "bigram_dim")
        _at_least(self, "model", 0, "mlp_hidden", "mlp_mult", "rope_dims", "rope_ref_len", "train_seq_len", "bos_id",
                  "qk_gain_init")
        _check(self.rope_base > 0, "model.rope_base must be > 0")
        _check(self.model_dim % self.num_heads == 0, "model.model_dim must be divisible by model.num_heads")
        _check(self.num_heads % self.num_kv_heads == 0, "model.num_heads must be divisible by model.num_kv_heads")
        _check((self.model_dim // self.num_heads) % 2 == 0, "head dim must be even for RoPE")
        _check(self.rope_dims % 2 == 0 and self.rope_dims <= self.model_dim // self.num_heads,
               "model.rope_dims must be even and <= head dim")
        _check(self.mlp_mult > 0 or self.mlp_hidden > 0, "model.mlp_mult or model.mlp_hidden must be positive")
        _check(self.activation in ("relu2", "leaky_relu2"), f"model.activation: unknown {self.activation!r}")
        _check(self.logit_softcap > 0, "model.logit_softcap must be positive")
        _check(self.loss_chunk >= 0, "model.loss_chunk must be >= 0")
        _check(self.attention in ("auto", "fa3", "cudnn", "flash", "sdpa"),
               f"model.attention: unknown {self.attention!r}")
        _check(not self.doc_mask or self.attention in ("auto", "sdpa"),
               f"model.doc_mask needs model.attention=auto (FlexAttention on CUDA) or sdpa (a dense mask), "
               f"not {self.attention!r}")
        _check(self.bigram_buckets == 0 or self.bigram_buckets >= 2, "model.bigram_buckets must be 0 or >= 2")
        _check(0 <= self.xsa_last_n <= self.num_layers, "model.xsa_last_n must be in [0, num_layers]")
        _at_least(self, "model", 0, "smear_window", "attn_gate_window", "recur_from", "recur_to", "ve_dim")
        self.ve_layers = _layers(self, "ve_layers")
        self.no_attn_layers = _layers(self, "no_attn_layers")
        _check(not set(self.ve_layers) & set(self.no_attn_layers),
               f"model.ve_layers {self.ve_layers} and model.no_attn_layers {self.no_attn_layers} overlap: a value "
               "embedding needs the layer's attention")
        _check(self.parallel_from < 0 or all(v < self.parallel_from for v in self.no_attn_layers),
               f"model.no_attn_layers: {self.no_attn_layers} must come before model.parallel_from="
               f"{self.parallel_from} (a parallel block has its attention)")
        _check((self.ve_dim > 0) == bool(self.ve_layers),
               "model.ve_dim and model.ve_layers go together: a width > 0 and at least one layer, or neither")
        _at_least(self, "model", 1, "recur_loops")
        _check(self.smear_window <= self.model_dim and self.attn_gate_window <= self.model_dim,
               "model.smear_window and model.attn_gate_window must be <= model_dim")
        _check(-1 <= self.parallel_from < self.num_layers, "model.parallel_from must be -1 (off) or a layer index")
        _check(self.parallel_lanes in (1, 2), "model.parallel_lanes must be 1 or 2")
        _check(self.parallel_lanes == 1 or self.parallel_from >= 0,
               "model.parallel_lanes=2 needs the parallel blocks: set model.parallel_from to a layer")
        _check(self.lane_form in ("0427", "0331"), f"model.lane_form must be 0427 or 0331, not {self.lane_form!r}")
        _check(self.lane_form == "0427" or self.parallel_lanes == 2,
               "model.lane_form=0331 is a form of the two lanes: set model.parallel_lanes=2")
        _check(self.recur_to <= self.num_layers and (self.recur_to == 0 or self.recur_from < self.recur_to),
               "model.recur_from..recur_to must be a span of layers (recur_to <= num_layers)")
        _check(not self.recur_untie_mlp or (self.recur_to > self.recur_from and self.recur_loops > 1),
               "model.recur_untie_mlp needs depth recurrence: model.recur_from < recur_to and recur_loops > 1")

    @property
    def head_dim(self) -> int:
        return self.model_dim // self.num_heads

    @property
    def hidden_dim(self) -> int:
        return self.mlp_hidden if self.mlp_hidden > 0 else int(round(self.mlp_mult * self.model_dim))


@dataclass
class OptimConfig:
    matrix_lr: float = 0.04  # Muon, block matrices
    scalar_lr: float = 0.04  # Adam, vectors / control tensors / skip weights
    tied_embed_lr: float = 0.05  # Adam, tied token embedding (and BigramHash table)
    embed_lr: float = 0.6  # Adam, untied token embedding
    head_lr: float = 0.008  # Adam, untied lm_head
    muon_momentum: float = 0.95  # Muon momentum after the warm-up
    muon_momentum_start: float = 0.85  # linear warm-up from this value ...
    muon_momentum_warmup_steps: int = 500  # ... over this many steps (or, if > 0, the fraction below)
    muon_momentum_warmup_frac: float = 0.0  # warm-up length as a fraction of the budget (overrides steps)
    muon_backend_steps: int = 5  # Newton-Schulz iterations per Muon update
    muon_wd: float = 0.0  # decoupled: p <- p * (1 - lr * wd)
    muon_ns: str = "ns5"  # Newton-Schulz coefficients: ns5 (3.4445, -4.775, 2.0315) x steps | polar_express
    muon_row_norm: bool = False  # MuonEq-R: normalise each row of the update before Newton-Schulz
    adam_wd: float = 0.0  # AdamW decay on scalars
    embed_wd: float = 0.0  # AdamW decay on embeddings
    beta1: float = 0.9  # Adam beta1
    beta2: float = 0.95  # Adam beta2
    adam_eps: float = 1e-8  # Adam epsilon
    grad_clip_norm: float = 0.0  # 0 = off

    def __post_init__(self) -> None:
        for name in ("matrix_lr", "scalar_lr", "tied_embed_lr", "embed_lr", "head_lr"):
            _check(getattr(self, name) >= 0, f"optim.{name} must be >= 0")
        _check(0 <= self.muon_momentum < 1 and 0 <= self.muon_momentum_start < 1, "Muon momentum must be in [0, 1)")
        _check(self.muon_backend_steps >= 1, "optim.muon_backend_steps must be >= 1")
        _check(self.muon_ns in ("ns5", "polar_express"), f"optim.muon_ns: unknown {self.muon_ns!r}")
        _check(0 <= self.muon_momentum_warmup_frac <= 1, "optim.muon_momentum_warmup_frac must be in [0, 1]")
        _check(self.grad_clip_norm >= 0, "optim.grad_clip_norm must be >= 0")
        _at_least(self, "optim", 0, "muon_momentum_warmup_steps", "muon_wd", "adam_wd", "embed_wd")
        _check(0 <= self.beta1 < 1 and 0 <= self.beta2 < 1 and self.adam_eps > 0, "bad optim.beta1/beta2/adam_eps")


@dataclass
class ScheduleConfig:
    """Everything that changes over a run, as fractions of the run's budget (see pgolf.schedule)."""

    warmdown_frac: float = 0.0  # LR decays linearly to 0 over the last fraction of the budget
    warmdown_iters: int = 0  # legacy (challenge baseline): warm-down length in steps at the measured ms/step
    min_lr_scale: float = 0.0  # floor of the warm-down multiplier
    swa_every: int = 0  # SWA: average a checkpoint every N steps ... (0 = off)
    swa_every_frac: float = 0.0  # ... or every this fraction of the budget (budget-aware; overrides swa_every)
    swa_start_scale: float = 0.5  # ... once the LR scale drops below this
    ema_decay: float = 0.0  # EMA of the weights every step (0 = off); used instead of SWA when set
    qat_start_frac: float = 0.0  # delayed QAT: fake-quantize from this fraction of the budget (0 = off)
    recur_start_frac: float = 0.0  # depth recurrence (model.recur_*) switches on at this fraction of the budget
    seq_schedule: str = ""  # training context growth, "frac:len,...", e.g. "0:1024,0.3:2048" (max = train.seq_len)

    def __post_init__(self) -> None:
        _check(0 <= self.warmdown_frac <= 1, "schedule.warmdown_frac must be in [0, 1]")
        _check(self.warmdown_iters >= 0, "schedule.warmdown_iters must be >= 0")
        _check(not (self.warmdown_frac > 0 and self.warmdown_iters > 0),
               "set one of schedule.warmdown_frac and schedule.warmdown_iters, not both")
        _check(0 <= self.min_lr_scale < 1, "schedule.min_lr_scale must be in [0, 1)")
        _check(self.swa_every >= 0 and 0 <= self.swa_every_frac < 1, "bad schedule.swa_every / swa_every_frac")
        _check(0 <= self.ema_decay < 1, "schedule.ema_decay must be in [0, 1)")
        _check(not (self.ema_decay > 0 and self.swa_enabled), "use SWA or EMA, not both")
        _check(0 <= self.qat_start_frac < 1, "schedule.qat_start_frac must be in [0, 1)")
        _check(0 <= self.recur_start_frac < 1, "schedule.recur_start_frac must be in [0, 1)")
        if self.seq_schedule:
            try:
                pts = self.seq_points
            except ValueError:
                raise ConfigError(f"schedule.seq_schedule={self.seq_schedule!r}: expected 'frac:len,...'") from None
            _check(pts[0][0] == 0 and all(a[0] < b[0] for a, b in zip(pts, pts[1:])) and all(n >= 2 for _, n in pts),
                   "schedule.seq_schedule: fractions must start at 0 and increase; lengths >= 2")

    @property
    def seq_points(self) -> list[tuple[float, int]]:
        return [(float(f), int(n)) for f, n in (item.split(":") for item in self.seq_schedule.split(",") if item)]

    @property
    def swa_enabled(self) -> bool:
        return self.swa_every > 0 or self.swa_every_frac > 0


TRACKERS = ("none", "wandb", "tensorboard")  # train.tracker: where metrics go besides metrics.jsonl


@dataclass
class TrainConfig:
    seed: int = 1337  # seeds init and data order (--seed N)
    max_seconds: float = 600.0  # training wall-clock budget; compile, warm-up and eval are outside it; 0 = none
    reserve_s: float = 0.0  # of max_seconds, kept for work after the loop that uses training data (GPTQ calibration)
    reserve_gptq: float = 0.0  # > 0: the reserve is this many times GPTQ (calibration + solve) as timed in the warm-up,
    # outside the clock, on the run's own GPUs; train.reserve_s is then its floor (needs quant.gptq)
    keep_float: bool = False  # also write the weights before the export (model_float.pt) for pgolf requant
    iterations: int = 20000  # step cap (the run stops at whichever comes first)
    batch_tokens: int = 524_288  # global batch, independent of the GPU count
    micro_batch_tokens: int = 65_536  # tokens per GPU per micro-step; grad accumulation is derived
    seq_len: int = 1024  # training context in tokens
    warmup_steps: int = 20  # compile/priming steps, then the initial state is restored
    val_every: int = 1000  # steps between validations (0 = only at the end)
    log_every: int = 1  # steps between log lines (metrics.jsonl has every step)
    compile: bool = True  # torch.compile on CUDA; CPU runs eager
    device: str = "auto"  # auto | cpu | cuda
    segment_seconds: float = 0.0  # pause after this much training in this process, checkpoint, exit (0 = never)
    segment_steps: int = 0  # the same in steps (0 = never); resume with pgolf train --resume RUN_DIR
    tracker: str = "none"  # none | wandb | tensorboard: also send metrics there (metrics.jsonl stays the record)

    def __post_init__(self) -> None:
        _check(self.max_seconds >= 0, "train.max_seconds must be >= 0")
        _check(self.iterations >= 1, "train.iterations must be >= 1")
        _check(self.seq_len >= 2, "train.seq_len must be >= 2")
        _at_least(self, "train", 1, "batch_tokens", "micro_batch_tokens")
        _check(self.micro_batch_tokens % self.seq_len == 0, "train.micro_batch_tokens must be a multiple of seq_len")
        _check(self.batch_tokens % self.micro_batch_tokens == 0,
               "train.batch_tokens must be a multiple of train.micro_batch_tokens")
        _check(self.warmup_steps >= 0 and self.val_every >= 0 and self.log_every >= 1, "bad train cadence values")
        _check(self.device in ("auto", "cpu", "cuda"), f"train.device: unknown {self.device!r}")
        _check(self.segment_seconds >= 0 and self.segment_steps >= 0, "train.segment_* must be >= 0")
        _check(self.reserve_s >= 0 and (self.max_seconds == 0 or self.reserve_s < self.max_seconds),
               "train.reserve_s must be >= 0 and below train.max_seconds")
        _check(self.reserve_gptq >= 0, "train.reserve_gptq must be >= 0")
        _check(self.tracker in TRACKERS, f"train.tracker: unknown {self.tracker!r} (one of {', '.join(TRACKERS)})")

    @property
    def loop_seconds(self) -> float:
        """The loop's share of the budget (0 = no time limit)."""
        return max(self.max_seconds - self.reserve_s, 1e-9) if self.max_seconds > 0 else 0.0

    def grad_accum(self, world_size: int) -> int:
        per_step = self.micro_batch_tokens * world_size
        if self.batch_tokens % per_step != 0:
            raise ConfigError(
                f"train.batch_tokens={self.batch_tokens} is not divisible by micro_batch_tokens x world_size "
                f"= {self.micro_batch_tokens} x {world_size}; pick a world size that divides "
                f"{self.batch_tokens // self.micro_batch_tokens}")
        return self.batch_tokens // per_step


QUANT_FORMATS = ("int4", "int5", "int6", "int7", "int8", "fp16", "fp32")


BUDGET_BYTES = 16_000_000  # the challenge's limit on code + compressed model (decimal)
QUANT_GROUPS = ("mlp", "attn", "other", "embed")  # the policy's integer groups, in the default fit order


@dataclass
class QuantConfig:
    """Per-tensor storage policy. Each tensor gets the first matching rule (see pgolf.quant.storage_format)."""

    mlp: str = "int8"  # blocks.*.mlp.* matrices
    attn: str = "int8"  # blocks.*.attn.* matrices
    embed: str = "int8"  # tok_emb / lm_head
    other: str = "int8"  # other large matrices (bigram table, bigram proj)
    small: str = "fp16"  # float tensors with <= keep_float_max_numel elements (control tensors stay fp32)
    keep_fp16: tuple[str, ...] = ()  # name substrings forced to fp16
    keep_float_max_numel: int = 65_536  # tensors up to this size stay float (quant.small)
    clip_quantile: float = 0.9999984  # per-row clip; 1.0 = row max
    clip_search: bool = False  # GPTQ-lite: per row, the clip among CLIP_CANDIDATES with the lowest MSE (int<8 only)
    sdclip: str = ""  # SDClip: per-row clip = k * std(row), k per group, e.g. "attn:13,mlp:11.5,other:12.85,embed:14"
    gptq: bool = False  # full-Hessian GPTQ on the policy's grid, calibrated on training tokens (counted as training)
    gptq_batches: int = 16  # calibration micro-batches of training tokens (per rank)
    gptq_embed: bool = False  # GPTQ also the tied embedding, with the output head's inputs as its Hessian
    int8_scale_floor: float = 1.0 / 127  # the baseline's int8 row-scale floor (0 = none)
    prune_frac: float = 0.0  # zero the smallest |w| of each quantized matrix before quantizing
    compressor: str = "zlib"  # zlib | zstd | lzma | brotli | auto (per stream, the smallest of zstd/brotli/lzma)
    level: int = 9  # compression level
    budget_bytes: int = BUDGET_BYTES  # code + compressed model
    fit_budget: bool = False  # over budget: lower integer widths a bit at a time (to int4) until it fits ...
    fit_order: tuple[str, ...] = QUANT_GROUPS  # ... in this order of groups ...
    fit_round_robin: bool = False  # ... each group to int4 before the next, or one bit from each in turn
    # Export-side corrections (QAT trains on the plain per-row grid; pgolf.quant's docstring describes them):
    lqer_top: int = 0  # LQER: low-rank correction of the quantization error on the K tensors with the largest error
    lqer_rank: int = 4  # LQER: rank r of the correction A (R x r) B (r x C)
    lqer_a_bits: int = 2  # LQER: bits of A's codes (mid-rise, one scale per rank component)
    lqer_b_bits: int = 4  # LQER: bits of B's codes (mid-rise, one scale per group of 64 input columns)
    awq: bool = False  # AWQ-lite: each integer matrix keeps its awq_group most salient input columns at awq_bits
    awq_group: int = 64  # AWQ-lite: how many input columns (saliency: diag of the GPTQ Hessian, else column norm)
    awq_bits: int = 8  # AWQ-lite: their width (only for tensors narrower than this)
    sort_rows: bool = False  # store code rows in greedy L1 nearest-neighbour order (+2 bytes a row), for compression

    @property
    def sdclip_k(self) -> dict[str, float]:
        return {g.strip(): float(k) for g, k in (item.split(":") for item in self.sdclip.split(",") if item.strip())}

    def __post_init__(self) -> None:
        for name in ("mlp", "attn", "embed", "other", "small"):
            _check(getattr(self, name) in QUANT_FORMATS, f"quant.{name}: {getattr(self, name)!r} not in {QUANT_FORMATS}")
        _check(self.compressor in ("zlib", "zstd", "lzma", "brotli", "auto"),
               f"quant.compressor: unknown {self.compressor!r}")
        _check(0.5 < self.clip_quantile <= 1.0, "quant.clip_quantile must be in (0.5, 1]")
        _check(0 <= self.prune_frac < 0.5, "quant.prune_frac must be in [0, 0.5)")
        _at_least(self, "quant", 0, "keep_float_max_numel", "int8_scale_floor")
        try:
            ks = self.sdclip_k
        except ValueError:
            raise ConfigError(f"quant.sdclip={self.sdclip!r}: expected 'group:k,...'") from None
        _check(set(ks) <= set(QUANT_GROUPS) and all(k > 0 for k in ks.values()),
               f"quant.sdclip: groups among {', '.join(QUANT_GROUPS)}, k > 0")
        _at_least(self, "quant", 1, "budget_bytes", "level")
        _at_least(self, "quant", 0, "lqer_top")
        _at_least(self, "quant", 1, "lqer_rank", "awq_group")
        for name in ("lqer_a_bits", "lqer_b_bits", "awq_bits"):
            _check(2 <= getattr(self, name) <= 8, f"quant.{name}: {getattr(self, name)} not in 2..8")
        _check(self.awq_group < 1 << 16, "quant.awq_group: the columns are stored as uint16")
        if isinstance(self.keep_fp16, str):  # from --set
            self.keep_fp16 = tuple(s for s in self.keep_fp16.split(",") if s)
        if isinstance(self.fit_order, str):
            self.fit_order = tuple(s.strip() for s in self.fit_order.split(",") if s.strip())
        self.fit_order = tuple(self.fit_order)
        _check(set(self.fit_order) <= set(QUANT_GROUPS) and len(set(self.fit_order)) == len(self.fit_order),
               f"quant.fit_order: {','.join(self.fit_order)!r} must name distinct groups among "
               f"{', '.join(QUANT_GROUPS)}")


# the projections TTT's adapters may sit on (evaluate.TTTAdapters), in the order their initial A are drawn
TTT_TARGETS = ("q", "v", "k", "o", "mlp", "head")


@dataclass
class EvalConfig:
    seq_len: int = 0  # eval context; 0 = train.seq_len
    batch_tokens: int = 524_288  # plain eval batch (global)
    sliding_stride: int = 0  # sliding-window eval stride (0 = off)
    sliding_batch_seqs: int = 64  # windows per forward
    ttt: bool = False  # LoRA test-time training eval
    ttt_rank: int = 8  # LoRA rank of the TTT adapters
    ttt_lr: float = 0.01  # AdamW lr of the TTT adapters (the frontier records: 1e-4, rank 80-96, 48-token chunks)
    ttt_beta1: float = 0.9  # AdamW beta1 of the TTT adapters (the frontier records: 0)
    ttt_beta2: float = 0.95  # AdamW beta2 of the TTT adapters (the frontier records: 0.99)
    ttt_wd: float = 0.0  # AdamW's decoupled weight decay on the TTT adapters (the frontier records: 0.5)
    ttt_targets: tuple[str, ...] = ("q", "v", "head")  # adapted: q, k, v, o, mlp (beside it), head (#1530: all)
    ttt_alpha: float = 0.0  # adapter outputs scaled by alpha / rank; 0 = unscaled (the records: 144)
    ttt_warm_a: bool = False  # keep each adapter row's A across documents, reset B only (#1767; the records: on)
    ttt_chunk: int = 256  # tokens scored, then trained on, per TTT step
    ttt_short_chunk: int = 0  # the chunk of documents shorter than eval.ttt_short_len (#2014, #2067: 16); 0 = off
    ttt_short_len: int = 2048  # documents shorter than this (tokens) take eval.ttt_short_chunk
    ttt_seq_len: int = 0  # TTT context window; 0 = train.seq_len (a shorter window than the model's loses context)
    ttt_batch_docs: int = 64  # documents adapted in parallel
    ttt_compile: bool = True  # on CUDA: TTT's forward compiled (dynamic shapes), warmed up on random tokens untimed
    ttt_phases: int = 0  # phased TTT: after each of this many groups of scored documents, global SGD on them (0 = off)
    ttt_prefix_frac: float = 0.05  # the documents the phases cover, a fraction of the val docs (records: 2,500/50,000)
    ttt_sgd_lr: float = 0.001  # phased TTT: SGD learning rate on the base weights
    ttt_sgd_momentum: float = 0.9  # phased TTT: SGD momentum
    ttt_sgd_batch_seqs: int = 32  # phased TTT: sequences of eval.ttt_seq_len per SGD step
    ttt_sgd_clip: float = 1.0  # phased TTT: gradient-norm clip (0 = none)
    ttt_asym_softcap: bool = False  # phased TTT: the softcap's positive and negative sides learned by its SGD (#1923)
    final: str = "plain"  # the scored number: plain | sliding | ttt
    prequant_sliding: bool = True  # with final=sliding, score the float weights by it too (its quant gap; ~40-60 s
    # on the proxy): off, the pre-quant score is plain only (the ablation rows, where minutes are rows)
    max_tokens: int = 0  # cap on val tokens (debugging only; 0 = all)

    def __post_init__(self) -> None:
        _check(self.final in ("plain", "sliding", "ttt"), f"eval.final: unknown {self.final!r}")
        _check(self.final != "sliding" or self.sliding_stride > 0, "eval.final=sliding needs eval.sliding_stride > 0")
        _check(self.final != "ttt" or self.ttt, "eval.final=ttt needs eval.ttt=true")
        _at_least(self, "eval", 0, "seq_len", "sliding_stride", "ttt_lr", "ttt_wd", "ttt_alpha", "max_tokens",
                  "ttt_phases", "ttt_sgd_lr", "ttt_sgd_momentum", "ttt_sgd_clip", "ttt_seq_len", "ttt_short_chunk",
                  "ttt_short_len")
        _at_least(self, "eval", 1, "batch_tokens", "sliding_batch_seqs", "ttt_rank", "ttt_chunk", "ttt_batch_docs",
                  "ttt_sgd_batch_seqs")
        if isinstance(self.ttt_targets, str):
            self.ttt_targets = tuple(t.strip() for t in self.ttt_targets.split(",") if t.strip())
        self.ttt_targets = tuple(self.ttt_targets)
        bad = [t for t in self.ttt_targets if t not in TTT_TARGETS]
        _check(self.ttt_targets and not bad and len(set(self.ttt_targets)) == len(self.ttt_targets),
               f"eval.ttt_targets={','.join(self.ttt_targets)}: name each of {', '.join(TTT_TARGETS)} at most once")
        for k in ("ttt_beta1", "ttt_beta2"):
            _check(0.0 <= getattr(self, k) < 1.0, f"eval.{k}={getattr(self, k)}: must be in [0, 1)")
        _check(0.0 < self.ttt_prefix_frac <= 1.0, f"eval.ttt_prefix_frac={self.ttt_prefix_frac}: must be in (0, 1]")
        _check(self.ttt_seq_len != 1, "eval.ttt_seq_len=1: a TTT window needs at least 2 tokens (0 = train.seq_len)")
        _check(not self.ttt_asym_softcap or self.ttt_phases > 0, "eval.ttt_asym_softcap needs eval.ttt_phases > 0: "
               "only phased TTT's global SGD trains the two caps (without it they stay model.logit_softcap)")


@dataclass
class DataConfig:
    path: str = ""  # folder with fineweb_train_*.bin / fineweb_val_*.bin; "" = $PGOLF_DATA or the embedded corpus
    train_glob: str = "fineweb_train_*.bin"  # train shard names in data.path
    val_glob: str = "fineweb_val_*.bin"  # validation shard names in data.path
    tokenizer: str = ""  # SentencePiece .model; "" = found next to the data (see pgolf.data.find_tokenizer)

    def __post_init__(self) -> None:
        _check("*" in self.train_glob and "*" in self.val_glob, "data globs must contain '*'")


@dataclass
class Config:
    name: str = "custom"  # the recipe name (run folder names and logs)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    quant: QuantConfig = field(default_factory=QuantConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    data: DataConfig = field(default_factory=DataConfig)

    def ttt_window(self) -> int:
        """The TTT context window: eval.ttt_seq_len, 0 = the model's own train.seq_len."""
        return self.eval.ttt_seq_len or self.train.seq_len

    def validate(self) -> "Config":
        """Cross-section checks; sections validate themselves on construction."""
        for sec in SECTIONS:
            obj = getattr(self, sec)
            obj.__post_init__()
        seq = self.eval.seq_len or self.train.seq_len
        win = f"eval.ttt_seq_len={self.eval.ttt_seq_len}"
        win += "" if self.eval.ttt_seq_len else f" (train.seq_len {self.ttt_window()})"
        for k in ("ttt_chunk", "ttt_short_chunk"):
            _check(getattr(self.eval, k) <= self.ttt_window(), f"eval.{k}={getattr(self.eval, k)} > {win}: a chunk "
                   "must fit the TTT window, or its first tokens would never be scored")
        _check(self.eval.sliding_stride <= seq, "eval.sliding_stride must be <= the eval sequence length")
        _check(self.quant.gptq or self.train.reserve_gptq == 0,
               "train.reserve_gptq times GPTQ, which is off: set quant.gptq=true or train.reserve_gptq=0")
        _check(not (self.quant.gptq and self.schedule.qat_start_frac > 0),
               "quant.gptq with QAT: QAT trains on the round-to-nearest grid, GPTQ exports other codes; use one")
        self.model.train_seq_len = self.train.seq_len  # derived: the context the RoPE base is fixed for
        for _, n in (self.schedule.seq_points if self.schedule.seq_schedule else []):
            _check(n <= self.train.seq_len and self.train.micro_batch_tokens % n == 0,
                   f"schedule.seq_schedule: length {n} must be <= train.seq_len and divide train.micro_batch_tokens")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Config":
        d = dict(d)
        unknown = set(d) - {"name", *SECTIONS}
        _check(not unknown, f"unknown config sections: {sorted(unknown)}")
        kwargs: dict[str, Any] = {"name": d.get("name", "custom")}
        for sec, typ in SECTIONS.items():
            _check(isinstance(d.get(sec, {}), dict), f"config section {sec}: expected a table of keys")
            vals = dict(d.get(sec, {}))
            defaults = typ()
            bad = set(vals) - {f.name for f in dataclasses.fields(typ)}
            _check(not bad, f"unknown keys in {sec}: {sorted(bad)}")
            for k, v in vals.items():  # a config file's values are typed like the fields (ints widen to floats)
                want = type(getattr(defaults, k))
                if isinstance(v, list):
                    vals[k] = v = tuple(v)
                if want is float and type(v) is int:
                    vals[k] = float(v)
                elif type(v) is not want and not (want is tuple and type(v) is str):
                    raise ConfigError(f"{sec}.{k}={v!r}: expected a {want.__name__}")
            kwargs[sec] = typ(**vals)
        return cls(**kwargs).validate()

    @classmethod
    def from_file(cls, path: str) -> "Config":
        """A config file (``--config``): JSON, such as a run's config.json (which re-runs it exactly), or TOML
        (``.toml``: top-level ``name``, then one table per section). Sections and keys left out keep their
        defaults."""
        try:
            with open(path, "rb") as f:
                raw = f.read()
            if str(path).endswith(".toml"):
                import tomllib

                d = tomllib.loads(raw.decode("utf-8"))
            else:
                d = json.loads(raw)
        except OSError as e:
            raise ConfigError(f"--config {path}: {e.strerror or e}") from None
        except ValueError as e:  # JSONDecodeError, TOMLDecodeError, UnicodeDecodeError
            raise ConfigError(f"--config {path}: not valid {'TOML' if str(path).endswith('.toml') else 'JSON'} "
                              f"({e})") from None
        _check(isinstance(d, dict), f"--config {path}: expected an object of sections")
        return cls.from_dict(d)


SECTIONS = {
    "model": ModelConfig,
    "optim": OptimConfig,
    "schedule": ScheduleConfig,
    "train": TrainConfig,
    "quant": QuantConfig,
    "eval": EvalConfig,
    "data": DataConfig,
}


def _parse_value(raw: str, current: Any, key: str) -> Any:
    typ = type(current)
    try:
        if typ is bool:
            low = raw.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if typ is int:
            try:
                return int(raw.replace("_", ""))
            except ValueError:
                f = float(raw)  # allow 1e6
                if f != int(f):
                    raise
                return int(f)
        if typ is float:
            return float(raw)
        if typ is tuple:
            return tuple(s.strip() for s in raw.split(",") if s.strip())
        return raw
    except ValueError:
        raise ConfigError(f"--set {key}={raw}: expected a {typ.__name__}") from None


def all_keys() -> list[str]:
    return [f"{sec}.{f.name}" for sec, typ in SECTIONS.items() for f in dataclasses.fields(typ)] + ["name"]


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply ``section.field=value`` strings. Unknown keys raise with the closest valid names."""
    d = cfg.to_dict()
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        key = key.strip()
        if key == "name":
            d["name"] = raw
            continue
        parts = key.split(".")
        if len(parts) != 2 or parts[0] not in SECTIONS or parts[1] not in d[parts[0]]:
            close = difflib.get_close_matches(key, all_keys(), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(f"unknown config key {key!r}{hint}")
        sec, name = parts
        d[sec][name] = _parse_value(raw, d[sec][name], key)
    return Config.from_dict(d)
