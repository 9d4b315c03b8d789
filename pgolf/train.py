"""The training run: build -> loop -> export and score.

Run: ``pgolf train --recipe NAME`` (1 CPU / 1 GPU) or ``torchrun --nproc_per_node=N -m pgolf train ...``.

- ``build``: everything the loop needs -- checked data, model, compiled forward, optimizers, QAT grid, loader.
- ``loop``: the timed steps. Its clock (pgolf.clock) counts training only (compile warm-up, after which the initial
  state is restored, validation and the final evals are outside it) and gives every rank the same value per step,
  so every schedule decision and the stop are the same everywhere.
- ``export_and_score``: the weights to ship (SWA/EMA), pre-quant evals, quantize -> artifact -> read back ->
  roundtrip evals, the summary.

The run directory holds the packed ``train_gpt.py`` that trained (written first: its bytes are the code bytes).
The first SIGINT/SIGTERM ends the loop at the next agreed step with ``status: interrupted`` in summary.json (and a
checkpoint when segments are on); a second one, or a stop that takes over 20 s, ends the process at once.
"""

from __future__ import annotations

import copy
import math
import os
import random
import signal
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.profiler import record_function

from . import __version__
from . import checkpoint as CK
from . import schedule as S
from .clock import TrainClock
from .config import EXIT_INTERRUPTED, Config, ConfigError, InputError, Interrupted, QuantConfig
from .data import DataSet, DistributedTokenLoader, prepare_data
from .dist import DistInfo, broadcast_object, cleanup_distributed, init_distributed
from .evaluate import challenge_eval_note, evaluate, predicted_challenge_eval_s, run_modes
from .files import sha256_bytes
from .model import FLEX_MAX_TOKENS, GPT, apply_precision, compile_model
from .optim import Optimizers, build_optimizers, newton_schulz
from .pack import build_script, embedded_config
from .predict import model_shapes, predict_fit
from .quant import policy_of, prime_gptq, qat_function, quantize_state, quantize_to_budget, read_artifact
from .rundir import RunDir, environment, install_commit, plot_run

PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}
STOP_DEADLINE_S = 20.0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def peak_flops(device: torch.device) -> float:
    if os.environ.get("PGOLF_PEAK_TFLOPS"):
        return float(os.environ["PGOLF_PEAK_TFLOPS"]) * 1e12
    if device.type != "cuda":
        return 0.0
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_FLOPS.items() if k in name), 0.0)


def configure_cuda() -> None:
    """TF32 matmuls. The attention kernel is chosen once per run by model.resolve_attention."""
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


def autocast_ctx(device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


class WeightAverager:
    """SWA (uniform average of checkpoints) or EMA, kept in fp32 on the model's device."""

    def __init__(self, model: torch.nn.Module, ema_decay: float):
        self.params = [p for p in model.parameters()]
        self.ema_decay = ema_decay
        self.avg: list[torch.Tensor] | None = None
        self.count = 0

    @torch.no_grad()
    def update(self) -> None:
        cur = [p.detach().float() for p in self.params]
        if self.avg is None:
            self.avg = [c.clone() for c in cur]
        elif self.ema_decay > 0:
            torch._foreach_lerp_(self.avg, cur, 1.0 - self.ema_decay)
        else:
            torch._foreach_mul_(self.avg, self.count / (self.count + 1))
            torch._foreach_add_(self.avg, cur, alpha=1.0 / (self.count + 1))
        self.count += 1

    @torch.no_grad()
    def copy(self, pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Parameters that became copies of others (untied MLPs when the recurrence starts): their average becomes
        the others', as if they had been one tensor until now (which they were, in the function computed)."""
        if self.avg is not None:
            at = {id(p): i for i, p in enumerate(self.params)}
            for dst, src in pairs:
                self.avg[at[id(dst)]].copy_(self.avg[at[id(src)]])

    @torch.no_grad()
    def apply(self) -> None:
        if self.avg is not None:
            for p, a in zip(self.params, self.avg):
                p.copy_(a.to(p.dtype))

    def state_dict(self) -> dict:
        return {"avg": self.avg, "count": self.count}

    def load_state_dict(self, st: dict) -> None:
        """From ``state_dict()``, on any device: the average moves to the parameters' device."""
        self.avg = [a.to(p.device) for a, p in zip(st["avg"], self.params)] if st["avg"] is not None else None
        self.count = st["count"]


class StopSignals:
    """SIGINT/SIGTERM during the loop: the first asks for a stop at the next agreed step (``requested``) and arms a
    deadline; a second one, or one outside the loop, raises KeyboardInterrupt at once."""

    def __init__(self):
        self.requested = False
        self.in_loop = False
        self._old: dict = {}

    def _handle(self, signum, frame) -> None:
        if self.in_loop and not self.requested:
            self.requested = True
            t = threading.Timer(STOP_DEADLINE_S, lambda: os._exit(EXIT_INTERRUPTED))
            t.daemon = True
            t.start()
            return
        raise KeyboardInterrupt

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


# ---------------------------------------------------------------------------------------------------------------
# build


@dataclass
class Built:
    cfg: Config
    info: DistInfo
    data: DataSet
    model: GPT
    compiled: torch.nn.Module  # the forward the loop and the no-grad evals call (compiled on CUDA)
    optimizers: Optimizers
    qat_policy: QuantConfig | None  # the grid QAT trains on: the policy the export is predicted to settle on
    code: str  # the packed train_gpt.py
    predicted: int  # predicted model bytes
    predicted_policy: QuantConfig
    loader: DistributedTokenLoader | None = None
    averager: WeightAverager | None = None
    qat_on: bool = False
    extra: dict = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return self.info.device

    def set_qat(self, on: bool) -> None:
        if on or self.qat_on:
            self.model.set_qat_alpha(1.0 if on else 0.0)
        self.qat_on = on

    @property
    def recurrent(self) -> bool:
        return len(self.model.layer_order(True)) > self.cfg.model.num_layers

    def new_loader(self) -> DistributedTokenLoader:
        self.loader = DistributedTokenLoader(self.data.train_files, self.info.rank, self.info.world_size, self.device)
        return self.loader

    def train_step(self, lr_mult: float, momentum: float, seq_len: int = 0) -> torch.Tensor:
        """One optimizer step over the global batch (grad accumulation derived) in sequences of ``seq_len``
        (default train.seq_len); returns the mean loss (a tensor, averaged over ranks; reading it is left to the
        caller, a step later)."""
        cfg, info, opt = self.cfg, self.info, self.optimizers
        seq_len = seq_len or cfg.train.seq_len
        opt.set_lr_scale(lr_mult)
        opt.set_muon_momentum(momentum)
        if self.qat_on:
            self.model.refresh_qat()  # the grid of the weights as they are now
        opt.zero_grad()
        accum = cfg.train.grad_accum(info.world_size)
        total = torch.zeros((), device=self.device)
        for _ in range(accum):
            with record_function("pgolf/data"):
                x, y = self.loader.next_batch(cfg.train.micro_batch_tokens, seq_len)
            with record_function("pgolf/forward"), autocast_ctx(self.device):
                loss = self.compiled(x, y)
            with record_function("pgolf/backward"):
                (loss / accum).backward()
            total += loss.detach() / accum
        with record_function("pgolf/optimizer"):
            opt.step()  # averages the gradients over ranks, clips, steps
        if info.distributed:
            dist.all_reduce(total, op=dist.ReduceOp.SUM)
            total /= info.world_size
        return total


def build(cfg: Config, info: DistInfo, data: DataSet, code: str, log, predict: bool = True) -> Built:
    device = info.device
    seed_everything(cfg.train.seed)
    model = GPT(cfg.model).to(device)
    apply_precision(model, device)
    backend = model.use_attention(device)
    if backend == "flex" and cfg.train.compile and cfg.train.micro_batch_tokens > FLEX_MAX_TOKENS:
        raise ConfigError(f"model.doc_mask: FlexAttention fails above {FLEX_MAX_TOKENS:,} tokens a call on the GPUs "
                          f"measured; train.micro_batch_tokens={cfg.train.micro_batch_tokens:,} -- lower it (gradient "
                          "accumulation keeps train.batch_tokens)")
    predicted, predicted_policy = 0, cfg.quant
    if info.is_main and predict:
        predicted_policy, predicted = predict_fit(model_shapes(model), cfg.quant, cfg.model.__dict__,
                                                  len(code.encode("utf-8")))
    predicted_policy = broadcast_object(predicted_policy, info)
    qat_policy = predicted_policy if cfg.schedule.qat_start_frac > 0 else None
    if qat_policy is not None:  # the export's own quantizer, on the grid the export is predicted to use
        model.set_qat(lambda name: qat_function(name, model.get_parameter(name), qat_policy))
    if info.distributed:  # every rank starts from rank 0's weights
        for t in list(model.parameters()) + list(model.buffers()):
            dist.broadcast(t.data, src=0)
    use_compile = cfg.train.compile and device.type == "cuda"
    compiled = compile_model(model, use_compile)
    optimizers = build_optimizers(model, cfg.optim, cfg.model.tie_embeddings, device)
    if use_compile and optimizers.muon is not None:
        optimizers.muon.ns = torch.compile(newton_schulz)
    b = Built(cfg, info, data, model, compiled, optimizers, qat_policy, code, predicted, predicted_policy)
    b.extra["compile"] = use_compile
    if cfg.schedule.ema_decay > 0 or cfg.schedule.swa_enabled:
        b.averager = WeightAverager(model, cfg.schedule.ema_decay)
    return b


def warm_up(b: Built, log) -> None:
    """Compile and prime every path the loop takes (QAT too) and GPTQ's solve, then restore the initial state
    exactly."""
    cfg = b.cfg
    b.new_loader()
    if cfg.train.warmup_steps <= 0:
        return
    t_w = time.perf_counter()
    init_model = {k: v.detach().clone() for k, v in b.model.state_dict().items()}
    init_opt = copy.deepcopy(b.optimizers.state_dict())
    for _ in range(cfg.train.warmup_steps):
        b.train_step(1.0, cfg.optim.muon_momentum_start)
    # one step on every other graph the loop can reach: each training length, recurrence, QAT
    seqs = sorted({n for _, n in S.seq_points(cfg.schedule)} | {cfg.train.seq_len})
    for looped in ([False, True] if b.recurrent else [False]):
        for qat in ([False, True] if b.qat_policy is not None else [False]):
            for n in seqs:
                if (looped, qat, n) != (False, False, cfg.train.seq_len):
                    b.model.looped = looped
                    b.set_qat(qat)
                    b.train_step(1.0, cfg.optim.muon_momentum_start, n)
    b.model.looped = False
    b.set_qat(False)
    if cfg.quant.gptq:  # the solve runs inside the clock (the calibration's eager forward is the model's own)
        prime_gptq(b.device)
    b.model.load_state_dict(init_model)
    b.optimizers.load_state_dict(init_opt)
    b.new_loader()
    if b.device.type == "cuda":
        torch.cuda.synchronize()
    log(f"warmup: {cfg.train.warmup_steps} steps in {time.perf_counter() - t_w:.1f}s (outside the clock); "
        "initial state restored")


def measure_reserve(b: Built, log, stored: float | None = None) -> None:
    """``train.reserve_gptq``: time GPTQ as the export runs it (calibration on every rank, then the solve on rank 0;
    after one untimed calibration batch, since the export's first calls come after the loop's), on the initial
    weights and outside the clock, and leave that many times it of the budget to the export (``train.reserve_s``
    its floor; at most half the budget). The same value on every rank (rank 0's); a resumed run takes the one its
    schedule was built on (``stored``, from the checkpoint) instead of timing again. Sets ``b.cfg.train.reserve_s``;
    the run's config.json keeps the setting as given."""
    t = b.cfg.train
    if t.reserve_gptq <= 0 or t.max_seconds <= 0:
        return
    if stored is None:
        calibrate_hessians(b.model, b.loader, b.cfg, 1, b.info.distributed)  # first calls (kernels, handles): untimed
        hessians, calib_s = calibrate_timed(b)
        t0 = time.perf_counter()
        if b.info.is_main:  # quantize_state hands its codes back on the host: its time is the solve's
            quantize_state(dict(b.model.state_dict()), b.cfg.quant, b.cfg.model.__dict__, None, hessians)
        took = broadcast_object(calib_s + time.perf_counter() - t0 if b.info.is_main else None, b.info)
        b.new_loader()  # calibration read training batches: the loop starts from the first one
        stored = min(max(t.reserve_s, t.reserve_gptq * took), 0.5 * t.max_seconds)
        log(f"reserve: GPTQ took {took:.1f}s in the warm-up; the loop leaves it {stored:.1f}s of the "
            f"{t.max_seconds:.0f}s ({t.reserve_gptq:g}x, floor {t.reserve_s:g}s, at most half)")
    t.reserve_s = stored


# ---------------------------------------------------------------------------------------------------------------
# loop


@dataclass
class LoopEnd:
    steps: int
    train_s: float
    reason: str  # done | pause | interrupt
    qat_step: int | None
    prev_prog: float
    peak_mem_mib: float


class StepLog:
    """The dense per-step line and metrics record, written ``LAG`` steps late: a step's loss is read once the GPU
    is well past it, so reading it never makes the host wait for the step being computed."""

    LAG = 2

    def __init__(self, b: Built, rd: RunDir, log):
        cfg = b.cfg
        self.cfg, self.rd, self.log = cfg, rd, log
        self.tokens = cfg.train.batch_tokens
        self.flops_tok = b.model.flops_per_token(cfg.train.seq_len)
        self.peak = peak_flops(b.device)
        self.pending: list = []

    def push(self, rec) -> None:
        self.pending.append(rec)
        while len(self.pending) > self.LAG:
            self._write(self.pending.pop(0))

    def flush(self) -> None:
        while self.pending:
            self._write(self.pending.pop(0))

    def _write(self, rec) -> None:
        s, loss_t, lr_m, mom, el = rec
        loss = loss_t.item()
        if not math.isfinite(loss):
            raise FloatingPointError(f"loss is {loss} at step {s}")
        cfg = self.cfg
        avg_ms = 1000.0 * el / s
        tps = self.tokens * s / max(el, 1e-9)
        mfu = f" mfu:{100 * self.flops_tok * tps / self.peak:.1f}%" if self.peak else ""
        eta = max(cfg.train.loop_seconds - el, 0) if cfg.train.max_seconds else el / s * (cfg.train.iterations - s)
        if s % cfg.train.log_every == 0 or s == 1:
            self.log(f"step:{s}/{cfg.train.iterations} loss:{loss:.4f} lr:{lr_m:.3f} mom:{mom:.3f} "
                     f"ms/step:{avg_ms:.1f} tok/s:{tps:,.0f}{mfu} elapsed:{el:.1f}s eta:{eta:.0f}s")
        self.rd.metric(kind="train", step=s, loss=loss, lr_scale=lr_m, momentum=mom, elapsed_s=el,
                       ms_per_step=avg_ms, tokens_per_s=tps)


def loop(b: Built, rd: RunDir, log, clock: TrainClock, signals: StopSignals, resume: dict | None = None) -> LoopEnd:
    """The timed steps. Every decision reads ``clock.estimate(step)``: the same on every rank."""
    cfg, dev = b.cfg, b.device
    t = cfg.train
    step, qat_step, prev_prog = 0, None, 0.0
    if resume is not None:
        step, qat_step, prev_prog = resume["step"], resume["qat_step"], resume["prev_prog"]
        if qat_step is not None:
            b.set_qat(True)
        b.model.looped = resume.get("looped", False)  # already looping: untied MLPs are trained, not copied again
    seg_step0, seg_s0 = step, clock.train_s
    sync = torch.cuda.synchronize if dev.type == "cuda" else None
    steps_log = StepLog(b, rd, log)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    reason = "done"
    last_seq = 0
    signals.in_loop = True
    clock.start()
    while True:
        if step >= t.iterations or (t.max_seconds > 0 and clock.estimate(step + 1) > t.loop_seconds):
            break
        if clock.interrupted:
            reason = "interrupt"
            break
        if (t.segment_steps and step - seg_step0 >= t.segment_steps) or \
                (t.segment_seconds and clock.estimate(step) - seg_s0 >= t.segment_seconds):
            reason = "pause"
            break
        if t.val_every > 0 and step % t.val_every == 0:
            steps_log.flush()
            clock.stop(sync)
            r = evaluate(b.model, b.compiled, cfg, b.data.val_tokens, b.data.val_bytes, dev, ["plain"], log)["plain"]
            log(f"val step:{step} val_loss:{r.loss:.4f} val_bpb:{r.bpb:.4f} train_time:{clock.train_s:.1f}s "
                f"eval:{r.seconds:.1f}s")
            rd.metric(kind="val", step=step, val_loss=r.loss, val_bpb=r.bpb, train_s=clock.train_s)
            clock.start()
        elapsed = clock.estimate(step)
        prog = S.progress(step, elapsed, t)
        lr_m = S.lr_multiplier(step, elapsed, cfg.schedule, t)
        mom = S.muon_momentum(step, prog, cfg.optim)
        if b.qat_policy is not None and qat_step is None and S.qat_active(prog, cfg.schedule):
            b.set_qat(True)
            qat_step = step
            log(f"qat: fake quantization on from step {step} (progress {prog:.3f}) with {policy_of(b.qat_policy)}")
        if b.recurrent and not b.model.looped and prog >= cfg.schedule.recur_start_frac:
            copies = b.model.start_recurrence()
            if b.averager is not None:
                b.averager.copy(copies)
            log(f"recurrence: layers {cfg.model.recur_from}..{cfg.model.recur_to - 1} x{cfg.model.recur_loops} "
                f"from step {step} (progress {prog:.3f}): {len(b.model.layer_order(True))} layers deep")
        seq = S.seq_len_at(prog, cfg.schedule, t)
        if seq != last_seq:
            if last_seq:
                log(f"context: sequences of {seq} tokens from step {step} (progress {prog:.3f})")
            last_seq = seq
        loss = b.train_step(lr_m, mom, seq)
        step += 1
        clock.post(step, signals.requested)
        if b.averager is not None:
            now_prog = S.progress(step, clock.estimate(step), t)
            if cfg.schedule.ema_decay > 0 or S.swa_take(step, lr_m, cfg.schedule, now_prog, prev_prog):
                b.averager.update()
            prev_prog = now_prog
        steps_log.push((step, loss, lr_m, mom, clock.local()))
    signals.in_loop = False
    steps_log.flush()
    clock.stop(sync)
    clock.drain()
    peak = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else 0.0
    return LoopEnd(step, clock.train_s, reason, qat_step, prev_prog, peak)


# ---------------------------------------------------------------------------------------------------------------
# export and score


@torch.no_grad()
def calibrate_timed(b: Built) -> tuple[dict[str, torch.Tensor], float]:
    """``calibrate_hessians`` on the run's model and loader with ``quant.gptq_batches``, and its seconds (the GPU
    finished at both ends)."""
    if b.device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    hessians = calibrate_hessians(b.model, b.loader, b.cfg, b.cfg.quant.gptq_batches, b.info.distributed)
    if b.device.type == "cuda":
        torch.cuda.synchronize()
    return hessians, time.perf_counter() - t0


def calibrate_hessians(model: GPT, loader: DistributedTokenLoader, cfg: Config, batches: int,
                       distributed: bool = False, embed: bool | None = None) -> dict[str, torch.Tensor]:
    """GPTQ's calibration: H = sum of x x^T over the inputs x of every CastedLinear, on ``batches`` micro-batches of
    training tokens per rank (the loader goes on where training stopped; never validation data), summed over ranks.
    With ``embed`` (default ``quant.gptq_embed``) and a tied embedding, also "tok_emb.weight"'s H: its inputs as the
    output head, the final normed hidden states (the 2026-04-05 record's "GPTQ-quantize the embedding matrix").
    Keyed by weight name; float64. Runs the eager model (forward hooks); the loss is never computed."""
    from .model import CastedLinear

    hs: dict[str, torch.Tensor] = {}
    device = next(model.parameters()).device
    embed = cfg.quant.gptq_embed if embed is None else embed

    def add(key: str, x: torch.Tensor) -> None:
        # float64 and outside autocast: under CUDA autocast x.T @ x ran (and summed) in bfloat16, and the
        # rounding left H indefinite, which GPTQ's Cholesky then refused (proxy run, 2026-11-23)
        with torch.autocast(device.type, enabled=False):
            x = x.detach().reshape(-1, x.shape[-1]).double()
            xx = x.T @ x
        hs[key] = xx if key not in hs else hs[key].add_(xx)

    hooks = [m.register_forward_hook(lambda mod, inp, out, key=name + ".weight": add(key, inp[0]))
             for name, m in model.named_modules() if isinstance(m, CastedLinear)]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for _ in range(batches):
                x, _ = loader.next_batch(cfg.train.micro_batch_tokens, cfg.train.seq_len)
                with autocast_ctx(device):
                    h = model.hidden(x)
                    if model.lm_head is not None:
                        model.lm_head(h)  # its hook takes the head's inputs
                    elif embed:
                        add("tok_emb.weight", h)
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    if distributed:
        for key in sorted(hs):
            dist.all_reduce(hs[key], op=dist.ReduceOp.SUM)
    return hs


def export_and_score(b: Built, rd: RunDir, log, end: LoopEnd) -> dict:
    cfg, info, dev = b.cfg, b.info, b.device
    steps, train_time = end.steps, end.train_s
    tps = cfg.train.batch_tokens * steps / max(train_time, 1e-9)
    ms_step = 1000.0 * train_time / max(steps, 1)
    log(f"stopped: step:{steps} train_time:{train_time:.1f}s ms/step:{ms_step:.1f} tok/s:{tps:,.0f} "
        f"peak_mem:{end.peak_mem_mib:,.0f}MiB" + (f" qat_from_step:{end.qat_step}" if b.qat_policy else ""))
    # ---- weights to ship: the average, if any ----
    if b.averager is not None and b.averager.count > 0:
        b.averager.apply()
        log(f"weights: {'EMA' if cfg.schedule.ema_decay > 0 else 'SWA'} over {b.averager.count} updates applied")
    if b.qat_policy is not None:
        b.set_qat(False)  # the shipped weights are the float master weights; export quantizes them
    if b.recurrent and not b.model.looped:  # scored with its recurrence, as pgolf eval scores it (after the
        b.model.start_recurrence()  # average: untied MLPs of a loop that never started copy the averaged layer)
    if cfg.train.keep_float and info.is_main:  # the weights before the export, for pgolf requant
        rd.write("model_float.pt", _torch_bytes({k: v.detach().cpu() for k, v in b.model.state_dict().items()}))
    final_modes = ["plain"] + (["sliding"] if cfg.eval.final == "sliding" and cfg.eval.prequant_sliding else [])
    pre = evaluate(b.model, b.compiled, cfg, b.data.val_tokens, b.data.val_bytes, dev, final_modes, log)
    rd.metric(kind="val", step=steps, val_loss=pre["plain"].loss, val_bpb=pre["plain"].bpb, train_s=train_time)
    for m, r in pre.items():
        log(f"pre-quant {m} (step {steps}): val_loss:{r.loss:.4f} val_bpb:{r.bpb:.4f} eval:{r.seconds:.1f}s")

    # ---- artifact: quantize, compress, write; then reload from disk and score ----
    code_bytes = len(b.code.encode("utf-8"))
    code_sha = sha256_bytes(b.code.encode("utf-8"))
    nbytes, used = 0, cfg.quant
    hessians, gptq_s = None, 0.0
    if cfg.quant.gptq:  # uses training data: its time is training time (calibration and the solve, not compression)
        hessians, calib_s = calibrate_timed(b)
    if info.is_main:
        meta = {"recipe": cfg.name, "steps": steps, "config": cfg.to_dict(), "pgolf": __version__,
                "tokenizer_sha256": b.data.tokenizer_sha256, "code_sha256": code_sha}
        result, used, data = quantize_to_budget(dict(b.model.state_dict()), cfg.quant, cfg.model.__dict__, meta,
                                                code_bytes, log, hessians)
        if hessians is not None:
            gptq_s = calib_s + result.quantize_s
            log(f"gptq: {len(hessians)} matrices on {cfg.quant.gptq_batches} calibration batches of training tokens "
                f"per rank: calibration {calib_s:.1f}s + quantization with GPTQ's solve {result.quantize_s:.1f}s = "
                f"{gptq_s:.1f}s of training time ({train_time:.1f}s loop + {gptq_s:.1f}s = "
                f"{train_time + gptq_s:.1f}s of {cfg.train.max_seconds:.0f}s); compression {result.compress_s:.1f}s "
                "after the clock (packaging of the codes)")
            if cfg.train.max_seconds and train_time + gptq_s > cfg.train.max_seconds:
                log(f"WARNING: training with GPTQ took {train_time + gptq_s:.1f}s, over train.max_seconds; raise "
                    "train.reserve_s")
        if used != cfg.quant:
            log(f"artifact: fitted to the budget with {policy_of(used)}")
        if b.qat_policy is not None and policy_of(used) != policy_of(b.qat_policy):
            log(f"artifact: exported with {policy_of(used)}, QAT trained on {policy_of(b.qat_policy)} (the size "
                "prediction missed)")
        nbytes = rd.write("model.pgz", data)
        worst = max(result.records, key=lambda r: r.rel_error)
        log(f"artifact: {rd.file('model.pgz')} model:{nbytes:,} bytes code:{code_bytes:,} "
            f"total:{nbytes + code_bytes:,} (predicted model {b.predicted:,}, "
            f"{100 * (b.predicted - nbytes) / max(nbytes, 1):+.1f}%) worst rel. error {worst.rel_error:.4f} "
            f"({worst.name}, {worst.fmt})")
    art_path = broadcast_object(str(rd.file("model.pgz")) if info.is_main else None, info)
    _, deq = read_artifact(art_path)
    b.model.load_state_dict(deq, strict=True)
    modes = run_modes(cfg)
    rt = evaluate(b.model, b.compiled, cfg, b.data.val_tokens, b.data.val_bytes, dev, modes, log)
    eval_8gpu = {m: predicted_challenge_eval_s(r.seconds, r.bytes, info.world_size, r.serial_s) for m, r in rt.items()}
    for m, r in rt.items():
        log(f"roundtrip {m}: val_loss:{r.loss:.4f} val_bpb:{r.bpb:.8f} eval:{r.seconds:.1f}s "
            + challenge_eval_note(eval_8gpu[m]))
    total = nbytes + code_bytes
    final = rt[cfg.eval.final]
    summary = {
        "status": "complete", "recipe": cfg.name, "seed": cfg.train.seed, "world_size": info.world_size,
        "steps": steps, "train_time_s": train_time + gptq_s, "loop_time_s": train_time, "gptq_s": gptq_s,
        "reserve_s": cfg.train.reserve_s,
        "ms_per_step": ms_step, "tokens_per_s": tps,
        "peak_mem_mib": end.peak_mem_mib, "params": b.model.num_params(), "attention": b.model.attn_backend,
        "torch": torch.__version__, "pgolf": __version__, "git": install_commit(),
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "prequant": {m: {"val_loss": r.loss, "val_bpb": r.bpb, "eval_s": r.seconds} for m, r in pre.items()},
        "roundtrip": {m: {"val_loss": r.loss, "val_bpb": r.bpb, "eval_s": r.seconds, "tokens": r.tokens,
                          "bytes": r.bytes, "eval_s_challenge_8gpu": eval_8gpu[m], "warmup_s": r.warmup_s}
                      for m, r in rt.items()},
        "final_mode": cfg.eval.final, "val_loss": final.loss, "val_bpb": final.bpb,
        "bytes_model": nbytes, "bytes_code": code_bytes, "bytes_total": total, "bytes_predicted_model": b.predicted,
        "over_budget": total > cfg.quant.budget_bytes, "code_sha256": code_sha,
        "quant_used": policy_of(used), "quant_predicted": policy_of(b.predicted_policy),
        "qat_policy": policy_of(b.qat_policy) if b.qat_policy else None, "qat_from_step": end.qat_step,
        "data": str(b.data.folder), "embedded_data": b.data.embedded, "tokenizer": str(b.data.tokenizer),
        "tokenizer_sha256": b.data.tokenizer_sha256, "data_checks": b.data.checks,
        "byte_source": b.data.byte_source,
        "val_tokens": int(b.data.val_tokens.numel()), "artifact": art_path,
    }
    rd.write_json("summary.json", summary)
    rd.metric(kind="final", **{k: v for k, v in summary.items() if not isinstance(v, (dict, list))})
    if info.is_main:
        plot_run(rd.path)
    log(f"final ({cfg.eval.final}, roundtrip): val_loss:{final.loss:.8f} val_bpb:{final.bpb:.8f} "
        f"bytes_total:{total:,} (model {nbytes:,} + code {code_bytes:,})")
    if total > cfg.quant.budget_bytes:
        log(f"ERROR: artifact over budget: {total:,} > {cfg.quant.budget_bytes:,} bytes (everything is kept in {rd.path})")
    return summary


# ---------------------------------------------------------------------------------------------------------------
# the run


def train(cfg: Config, run_dir: str | os.PathLike | None, resume: bool = False) -> dict:
    """Run a full training job in ``run_dir``; returns the summary (also run_dir/summary.json). With ``resume``,
    continue the paused run in ``run_dir`` from its checkpoint (pgolf.checkpoint). A run paused by
    ``train.segment_*`` returns ``{"paused": True, ...}`` without exporting or evaluating; an interrupted one
    raises ``Interrupted`` after writing its summary."""
    cfg = copy.deepcopy(cfg).validate()
    if run_dir is None:
        raise InputError("a run needs a run directory (pgolf train picks one: --out/--name)")
    info = init_distributed(cfg.train.device)
    ok = False
    try:
        out = _run(cfg, str(run_dir), info, resume)
        ok = True
        return out
    finally:
        cleanup_distributed(ok)


def _agreed(info: DistInfo, fn):
    """Run ``fn`` on rank 0; if it raises an InputError, every rank raises it (printed once, by rank 0)."""
    err = None
    if info.is_main:
        try:
            fn()
        except InputError as e:
            err = str(e)
    err = broadcast_object(err, info)
    if err is not None:
        e = InputError(err)
        e.quiet = not info.is_main
        raise e


def _run(cfg: Config, run_dir: str, info: DistInfo, resume: bool) -> dict:
    if info.device.type == "cuda":
        configure_cuda()
    run_dir = broadcast_object(run_dir, info)  # one folder for all ranks
    rd = RunDir(None, active=False)
    code = ""

    def open_dir():
        nonlocal rd, code
        rd = RunDir(run_dir, fresh=not resume)
        if resume:
            code = resumed_code(run_dir)
        else:
            code = build_script(cfg)  # the config as given: data paths and seed are not packed
            rd.write("train_gpt.py", code)

    _agreed(info, open_dir)
    try:
        with StopSignals() as signals:
            return _run_in(cfg, run_dir, info, resume, rd, code, signals)
    finally:
        rd.close()


def resumed_code(run_dir: str) -> str:
    """The packed file a paused run trained with, checked to be this pgolf's code."""
    path = Path(run_dir) / "train_gpt.py"
    if not path.is_file():
        raise InputError(f"{path}: missing; it is written when a run starts")
    stored = path.read_text(encoding="utf-8")
    if build_script(Config.from_dict(embedded_config(stored))) != stored:
        raise InputError(f"{path}: this pgolf's code differs from the code the run started with; resume it with the "
                         "pgolf (or train_gpt.py) that started it")
    return stored


def _run_in(cfg: Config, run_dir: str, info: DistInfo, resume: bool, rd: RunDir, code: str,
            signals: StopSignals) -> dict:
    log = rd.log if info.is_main else (lambda *a, **k: None)
    ckpt = CK.load_rank(run_dir, info.rank, info.world_size, torch.device("cpu")) if resume else None
    progress = {"steps": ckpt["step"] if ckpt else 0, "train_s": ckpt["train_s"] if ckpt else 0.0}
    try:
        data = prepare_data(cfg, log, info.rank, info.world_size, info.cpu_group)
        if data.embedded:
            log(f"data: no data given -- training '{cfg.name}' on the embedded corpus (Python's own documentation, "
                f"{data.folder}). For the challenge data: pgolf data fineweb --variant sp1024, then --data DIR.")
        else:
            log(f"data: {data.folder} ({len(data.train_files)} train shards, {len(data.val_files)} val shards); "
                f"tokenizer {data.tokenizer}")
        log("data checks: " + "; ".join(data.checks))
        log(f"bytes per val target: {data.byte_source} ({int(data.val_bytes[1:].sum()):,} bytes over "
            f"{data.val_tokens.numel() - 1:,} targets)")
        b = build(cfg, info, data, code, log)
        code_bytes = len(code.encode("utf-8"))
        if not resume:
            rd.write_json("config.json", cfg.to_dict())
            rd.write_json("env.json", environment(code))
            rd.write("tokenizer.model", data.tokenizer.read_bytes())  # so pgolf.load finds it wherever the run goes
        rd.start_tracker(cfg.train.tracker, cfg.to_dict())
        log(f"recipe:{cfg.name} params:{b.model.num_params():,} layers:{cfg.model.num_layers} "
            f"dim:{cfg.model.model_dim} vocab:{data.vocab_size} attention:{b.model.attention_label()} "
            f"compile:{b.extra['compile']} torch:{torch.__version__} device:{device_name(b.device)}")
        log(f"world:{info.world_size} grad_accum:{cfg.train.grad_accum(info.world_size)} "
            f"batch_tokens:{cfg.train.batch_tokens} micro_batch_tokens:{cfg.train.micro_batch_tokens} "
            f"seq_len:{cfg.train.seq_len} budget:{cfg.train.max_seconds:.0f}s iterations:{cfg.train.iterations}")
        log(f"artifact: predicted {b.predicted + code_bytes:,} bytes (model {b.predicted:,} + code {code_bytes:,}) "
            f"budget {cfg.quant.budget_bytes:,}"
            + (f" with {policy_of(b.predicted_policy)} (fitted)" if b.predicted_policy != cfg.quant else ""))
        warm_up(b, log)
        measure_reserve(b, log, ckpt.get("reserve_s") if ckpt else None)
        clock = TrainClock(progress["train_s"], progress["steps"], info.clock_group)
        if ckpt is not None:
            b.model.load_state_dict(ckpt["model"])
            b.optimizers.load_state_dict(ckpt["optimizers"])
            b.loader.load_state_dict(ckpt["loader"])
            if b.averager is not None and ckpt["averager"] is not None:
                b.averager.load_state_dict(ckpt["averager"])
            log(f"resume: step {ckpt['step']}, {ckpt['train_s']:.1f}s of training done, from "
                f"{CK.checkpoint_dir(run_dir)}")
        end = loop(b, rd, log, clock, signals, ckpt)
        del ckpt
        progress.update(steps=end.steps, train_s=end.train_s)
        segmented = cfg.train.segment_seconds > 0 or cfg.train.segment_steps > 0
        if end.reason == "pause" or (end.reason == "interrupt" and segmented):
            paused = _pause(rd, log, info, run_dir, b, end)
            if end.reason == "pause":
                return paused
        if end.reason == "interrupt":
            raise KeyboardInterrupt
        summary = export_and_score(b, rd, log, end)
    except KeyboardInterrupt:
        ck = CK.checkpoint_dir(run_dir)
        rd.write_json("summary.json", {"status": "interrupted", "recipe": cfg.name, "seed": cfg.train.seed,
                                       "steps": progress["steps"], "train_time_s": progress["train_s"],
                                       "checkpoint": str(ck) if (ck / CK.META).is_file() else None})
        log(f"interrupted after {progress['steps']} steps ({progress['train_s']:.1f}s of training); summary.json "
            "says so" + (f"; resume with pgolf train --resume {run_dir}" if (ck / CK.META).is_file() else ""))
        raise Interrupted(f"interrupted after {progress['steps']} steps ({run_dir})") from None
    if resume or segmented:
        if info.distributed:
            dist.barrier()
        if info.is_main:
            CK.remove(run_dir)  # consumed: the run is complete
    return summary


def _torch_bytes(obj) -> bytes:
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)


def _pause(rd: RunDir, log, info: DistInfo, run_dir, b: Built, end: LoopEnd) -> dict:
    """Write this rank's checkpoint, then (rank 0, after all ranks) the meta file that makes it complete."""
    t = time.perf_counter()
    state = {"model": b.model.state_dict(), "optimizers": b.optimizers.state_dict(),
             "loader": b.loader.state_dict(), "averager": b.averager.state_dict() if b.averager is not None else None,
             "step": end.steps, "train_s": end.train_s, "prev_prog": end.prev_prog, "qat_step": end.qat_step,
             "looped": b.model.looped, "reserve_s": b.cfg.train.reserve_s}
    CK.save_rank(run_dir, info.rank, state)
    if info.distributed:
        dist.barrier()
    if info.is_main:
        CK.write_meta(run_dir, {"world_size": info.world_size, "step": end.steps, "train_s": end.train_s})
    log(f"paused: step {end.steps}, {end.train_s:.1f}s of training; checkpoint {CK.checkpoint_dir(run_dir)} written "
        f"in {time.perf_counter() - t:.1f}s. Continue with: pgolf train --resume {run_dir} (or train_gpt.py "
        "--resume; same number of processes)")
    rd.metric(kind="paused", step=end.steps, train_s=end.train_s)
    return {"paused": True, "steps": end.steps, "train_time_s": end.train_s,
            "checkpoint": str(CK.checkpoint_dir(run_dir))}
