"""The training run: data, model, optimizers, the timed loop, then quantize -> artifact -> roundtrip -> score.

Run: ``pgolf train --recipe NAME`` (1 CPU / 1 GPU) or ``torchrun --nproc_per_node=N -m pgolf train ...``.
The clock covers training steps only: compile warm-up (after which the initial state is restored), validation
and the final evals are outside it. All ranks stop on the same step.
"""

from __future__ import annotations

import copy
import math
import os
import random
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from . import checkpoint as CK
from . import schedule as S
from .config import Config, InputError
from .data import DistributedTokenLoader, challenge_data_dir, check_vocab, find_tokenizer, list_shards, load_tokens
from .dist import DistInfo, all_reduce_max, broadcast_object, cleanup_distributed, init_distributed
from .evaluate import EvalResult, rank_world, eval_ttt, eval_windows
from .model import GPT, apply_precision, resolve_attention
from .optim import build_optimizers, newton_schulz, set_lr_scale, set_muon_momentum
from .quant import bits_of, model_shapes, policy_of, predict_fit, quantize_to_budget, read_artifact, storage_format, \
    write_atomic
from .rundir import RunDir, environment, plot_run
from .tokenizer import build_byte_table, check_space_piece, load_sentencepiece

PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


class OverBudget(RuntimeError):
    pass


def resolve_data(cfg: Config, log) -> tuple[Path, Path, bool]:
    """(data folder, tokenizer, is_embedded). Order: data.path, $PGOLF_DATA, ./data/datasets/fineweb10B_spN (the
    challenge's layout, when present), the embedded corpus."""
    path = cfg.data.path or os.environ.get("PGOLF_DATA", "")
    if path:
        d = Path(path)
        if not d.is_dir():
            raise InputError(f"data folder not found: {d}")
        tok = Path(cfg.data.tokenizer) if cfg.data.tokenizer else find_tokenizer(d)
        return d, tok, False
    local = challenge_data_dir(cfg.model.vocab_size)
    if local is not None:
        tok = Path(cfg.data.tokenizer) if cfg.data.tokenizer else find_tokenizer(local)
        return local, tok, False
    from .embedded import ensure_embedded

    d = ensure_embedded(log)
    tok = Path(cfg.data.tokenizer) if cfg.data.tokenizer else d / "embedded.model"
    return d, tok, True


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


def code_bytes_for(cfg: Config) -> int:
    """Bytes of the single-file train_gpt.py that reproduces this run (pgolf.pack)."""
    from .pack import code_bytes

    return code_bytes(cfg)


def configure_cuda() -> None:
    """TF32 matmuls; SDPA limited to the flash kernel (as the challenge scripts do): it supports GQA and is the
    fastest at these shapes. FlashAttention 3, when importable, is used directly instead (model.attention)."""
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    from torch.backends.cuda import enable_cudnn_sdp, enable_flash_sdp, enable_math_sdp, enable_mem_efficient_sdp

    enable_cudnn_sdp(False)
    enable_flash_sdp(True)
    enable_mem_efficient_sdp(False)
    enable_math_sdp(False)


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


def evaluate_all(model, eval_model, cfg: Config, val_tokens, table, device, modes: list[str]) -> dict[str, EvalResult]:
    seq = cfg.eval.seq_len or cfg.train.seq_len
    out = {}
    for mode in modes:
        if mode == "plain":
            _, world = rank_world()
            bs = max(1, cfg.eval.batch_tokens // (seq * world))
            out[mode] = eval_windows(eval_model, val_tokens, table, seq, seq, bs, device)
        elif mode == "sliding":
            out[mode] = eval_windows(eval_model, val_tokens, table, seq, cfg.eval.sliding_stride,
                                     cfg.eval.sliding_batch_seqs, device)
        elif mode == "ttt":
            e = cfg.eval
            out[mode] = eval_ttt(model, val_tokens, table, device, rank_r=e.ttt_rank, lr=e.ttt_lr, chunk=e.ttt_chunk,
                                 seq_len=e.ttt_seq_len, batch_docs=e.ttt_batch_docs, bos_id=cfg.model.bos_id)
    return out


def train(cfg: Config, run_dir: str | os.PathLike | None = None, resume: bool = False) -> dict:
    """Run a full training job; returns the summary dict (also written to run_dir/summary.json). With ``resume``,
    continue the paused run in ``run_dir`` from its checkpoint (pgolf.checkpoint). A run paused by
    ``train.segment_*`` returns ``{"paused": True, ...}`` without exporting or evaluating."""
    cfg = copy.deepcopy(cfg).validate()
    info = init_distributed(cfg.train.device)
    try:
        return _train(cfg, run_dir, info, code_bytes_for(cfg) if info.is_main else 0, resume)
    finally:
        cleanup_distributed()


def _train(cfg: Config, run_dir, info: DistInfo, code_bytes: int, resume: bool = False) -> dict:
    device = info.device
    if device.type == "cuda":
        configure_cuda()
    run_dir = broadcast_object(str(run_dir) if run_dir is not None else None, info)  # one folder for all ranks
    ckpt = None
    if resume:
        if run_dir is None:
            raise InputError("resume needs the run directory of the paused run")
        ckpt = CK.load_rank(run_dir, info.rank, info.world_size, torch.device("cpu"))
    segmented = cfg.train.segment_seconds > 0 or cfg.train.segment_steps > 0
    if segmented and run_dir is None:
        raise InputError("train.segment_* pauses a run into its run directory: give one (--out/--name)")
    rd = RunDir(run_dir, active=info.is_main)
    log = rd.log if info.is_main else (lambda *a, **k: None)

    # ---- data and metric ----
    data_dir, tok_path, embedded = resolve_data(cfg, log)
    sp = load_sentencepiece(tok_path)
    check_space_piece(sp, str(tok_path))
    V = int(sp.vocab_size())
    if cfg.model.vocab_size == 0:
        cfg.model.vocab_size = V
    elif cfg.model.vocab_size != V:
        raise InputError(f"vocab mismatch: model.vocab_size={cfg.model.vocab_size} but tokenizer {tok_path} has {V} "
                         "pieces (set model.vocab_size=0 to take it from the tokenizer)")
    cfg.data.path, cfg.data.tokenizer = str(data_dir), str(tok_path)
    table = build_byte_table(sp, V)
    val_files = list_shards(data_dir, cfg.data.val_glob)
    train_files = list_shards(data_dir, cfg.data.train_glob)
    val_tokens = load_tokens(val_files, cfg.eval.max_tokens)
    check_vocab(val_tokens, V, str(val_files[0]) if len(val_files) == 1 else f"{data_dir}/{cfg.data.val_glob}")
    if embedded:
        log(f"data: no data given -- training '{cfg.name}' on the embedded corpus (Python's own documentation, "
            f"{data_dir}). For the challenge data: pgolf data fineweb --variant sp1024, then --data DIR.")
    else:
        log(f"data: {data_dir} ({len(train_files)} train shards, {len(val_files)} val shards); tokenizer {tok_path}")

    # ---- model ----
    seed_everything(cfg.train.seed)
    model = GPT(cfg.model).to(device)
    apply_precision(model, device)
    backend = resolve_attention(cfg.model.attention, device)
    model.set_attention_backend(backend)
    qat_on = cfg.schedule.qat_start_frac > 0
    if qat_on:
        model.set_qat(lambda name: bits_of(storage_format(name, model.get_parameter(name), cfg.quant)))
    use_compile = cfg.train.compile and device.type == "cuda"
    compiled = torch.compile(model, dynamic=False, fullgraph=True) if use_compile else model
    ddp = DDP(compiled, device_ids=[info.local_rank] if device.type == "cuda" else None, broadcast_buffers=False) \
        if info.distributed else compiled
    optimizers = build_optimizers(model, cfg.optim, cfg.model.tie_embeddings, device)
    if use_compile:
        ns = torch.compile(newton_schulz)
        for o in optimizers:
            if hasattr(o, "ns"):
                o.ns = ns
    accum = cfg.train.grad_accum(info.world_size)
    n_params = model.num_params()
    flops_tok = model.flops_per_token(cfg.train.seq_len)
    peak = peak_flops(device)
    predicted, predicted_policy = 0, cfg.quant
    if info.is_main:
        predicted_policy, predicted = predict_fit(model_shapes(model), cfg.quant, cfg.model.__dict__, code_bytes)
    if not resume:
        rd.write_json("config.json", cfg.to_dict())
        rd.write_json("env.json", environment())
    log(f"recipe:{cfg.name} params:{n_params:,} layers:{cfg.model.num_layers} dim:{cfg.model.model_dim} "
        f"vocab:{V} attention:{backend} compile:{use_compile} torch:{torch.__version__} device:{device}")
    log(f"world:{info.world_size} grad_accum:{accum} batch_tokens:{cfg.train.batch_tokens} "
        f"micro_batch_tokens:{cfg.train.micro_batch_tokens} seq_len:{cfg.train.seq_len} "
        f"budget:{cfg.train.max_seconds:.0f}s iterations:{cfg.train.iterations}")
    log(f"artifact: predicted {predicted + code_bytes:,} bytes (model {predicted:,} + code {code_bytes:,}) "
        f"budget {cfg.quant.budget_bytes:,}"
        + (f" with {policy_of(predicted_policy)} (fitted)" if predicted_policy != cfg.quant else ""))

    loader = DistributedTokenLoader(train_files, info.rank, info.world_size, device)
    local_tokens = cfg.train.micro_batch_tokens

    def run_step(lr_mult: float, momentum: float) -> torch.Tensor:
        set_lr_scale(optimizers, lr_mult)
        set_muon_momentum(optimizers, momentum)
        for o in optimizers:
            o.zero_grad(set_to_none=True)
        total = torch.zeros((), device=device)
        for micro in range(accum):
            if info.distributed:
                ddp.require_backward_grad_sync = micro == accum - 1
            x, y = loader.next_batch(local_tokens, cfg.train.seq_len)
            with autocast_ctx(device):
                loss = ddp(x, y)
            (loss / accum).backward()
            total += loss.detach() / accum
        if cfg.optim.grad_clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip_norm)
        for o in optimizers:
            o.step()
        if info.distributed:
            dist.all_reduce(total, op=dist.ReduceOp.SUM)
            total /= info.world_size
        return total

    # ---- compile / priming warm-up, then restore the initial state ----
    if cfg.train.warmup_steps > 0:
        t_w = time.perf_counter()
        init_model = {k: v.detach().clone() for k, v in model.state_dict().items()}
        init_opt = [copy.deepcopy(o.state_dict()) for o in optimizers]
        for i in range(cfg.train.warmup_steps):
            run_step(1.0, cfg.optim.muon_momentum_start)
        if qat_on:  # prime the QAT path too
            model.set_qat_alpha(1.0)
            run_step(1.0, cfg.optim.muon_momentum_start)
            model.set_qat_alpha(0.0)
        model.load_state_dict(init_model)
        for o, st in zip(optimizers, init_opt):
            o.load_state_dict(st)
        loader = DistributedTokenLoader(train_files, info.rank, info.world_size, device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        log(f"warmup: {cfg.train.warmup_steps} steps in {time.perf_counter() - t_w:.1f}s (outside the clock); "
            "initial state restored")

    # ---- the timed loop ----
    averager = WeightAverager(model, cfg.schedule.ema_decay) \
        if (cfg.schedule.ema_decay > 0 or cfg.schedule.swa_enabled) else None
    prev_prog = 0.0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        torch.cuda.synchronize()
    train_s = 0.0
    step = 0
    stop = False
    qat_fired_step = None
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        for o, st in zip(optimizers, ckpt["optimizers"]):
            o.load_state_dict(st)
        loader.load_state_dict(ckpt["loader"])
        if averager is not None and ckpt["averager"] is not None:
            averager.load_state_dict(ckpt["averager"])
        step, train_s, prev_prog, qat_fired_step = ckpt["step"], ckpt["train_s"], ckpt["prev_prog"], ckpt["qat_step"]
        if qat_fired_step is not None:
            model.set_qat_alpha(1.0)
        log(f"resume: step {step}, {train_s:.1f}s of training done, from {CK.checkpoint_dir(run_dir)}")
        del ckpt
    seg_step0, seg_s0 = step, train_s
    pause = False
    t0 = time.perf_counter()
    pending = None
    tokens_per_step = cfg.train.batch_tokens

    def flush(p) -> None:
        s, loss_t, lr_m, mom, el = p
        loss = loss_t.item()
        if not math.isfinite(loss):
            raise FloatingPointError(f"loss is {loss} at step {s}")
        avg_ms = 1000.0 * el / s
        tps = tokens_per_step * s / max(el, 1e-9)
        mfu = f" mfu:{100 * flops_tok * tps / peak:.1f}%" if peak else ""
        eta = max(cfg.train.max_seconds - el, 0) if cfg.train.max_seconds else el / s * (cfg.train.iterations - s)
        if s % cfg.train.log_every == 0 or s == 1:
            log(f"step:{s}/{cfg.train.iterations} loss:{loss:.4f} lr:{lr_m:.3f} mom:{mom:.3f} ms/step:{avg_ms:.1f} "
                f"tok/s:{tps:,.0f}{mfu} elapsed:{el:.1f}s eta:{eta:.0f}s")
        rd.metric(kind="train", step=s, loss=loss, lr_scale=lr_m, momentum=mom, elapsed_s=el, ms_per_step=avg_ms,
                  tokens_per_s=tps)

    while True:
        elapsed = train_s + time.perf_counter() - t0
        last = step >= cfg.train.iterations or stop or pause
        if last or (cfg.train.val_every > 0 and step % cfg.train.val_every == 0):
            if pending is not None:
                flush(pending)
                pending = None
            if device.type == "cuda":
                torch.cuda.synchronize()
            train_s += time.perf_counter() - t0
            if last:
                break
            r = evaluate_all(model, compiled, cfg, val_tokens, table, device, ["plain"])["plain"]
            log(f"val step:{step} val_loss:{r.loss:.4f} val_bpb:{r.bpb:.4f} train_time:{train_s:.1f}s "
                f"eval:{r.seconds:.1f}s")
            rd.metric(kind="val", step=step, val_loss=r.loss, val_bpb=r.bpb, train_s=train_s)
            t0 = time.perf_counter()
        prog = S.progress(step, elapsed, cfg.train)
        lr_m = S.lr_multiplier(step, elapsed, cfg.schedule, cfg.train)
        mom = S.muon_momentum(step, prog, cfg.optim)
        if qat_on and qat_fired_step is None and S.qat_active(prog, cfg.schedule):
            model.set_qat_alpha(1.0)
            qat_fired_step = step
            log(f"qat: fake quantization on from step {step} (progress {prog:.3f})")
        loss_t = run_step(lr_m, mom)
        step += 1
        elapsed = train_s + time.perf_counter() - t0
        if averager is not None:
            now_prog = S.progress(step, elapsed, cfg.train)
            if cfg.schedule.ema_decay > 0 or S.swa_take(step, lr_m, cfg.schedule, now_prog, prev_prog):
                averager.update()
            prev_prog = now_prog
        if pending is not None:
            flush(pending)
        pending = (step, loss_t, lr_m, mom, elapsed)
        if cfg.train.max_seconds > 0:
            stop = all_reduce_max(elapsed, info) >= cfg.train.max_seconds
        if cfg.train.segment_steps > 0 and step - seg_step0 >= cfg.train.segment_steps:
            pause = True
        if cfg.train.segment_seconds > 0:
            pause = pause or all_reduce_max(elapsed - seg_s0, info) >= cfg.train.segment_seconds

    if pause and not stop and step < cfg.train.iterations:
        return _pause(rd, log, info, run_dir, model, optimizers, loader, averager, step, train_s, prev_prog,
                      qat_fired_step)
    steps = step
    train_time = train_s
    peak_mem = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else 0.0
    ms_step = 1000.0 * train_time / max(steps, 1)
    log(f"stopped: step:{steps} train_time:{train_time:.1f}s ms/step:{ms_step:.1f} "
        f"tok/s:{tokens_per_step * steps / max(train_time, 1e-9):,.0f} peak_mem:{peak_mem:,.0f}MiB"
        + (f" qat_from_step:{qat_fired_step}" if qat_on else ""))

    # ---- weights to ship: the average, if any ----
    if averager is not None and averager.count > 0:
        averager.apply()
        log(f"weights: {'EMA' if cfg.schedule.ema_decay > 0 else 'SWA'} over {averager.count} updates applied")
    if qat_on:
        model.set_qat_alpha(0.0)  # the shipped weights are the float master weights; export quantizes them
    final_modes = ["plain"] + ([cfg.eval.final] if cfg.eval.final == "sliding" else [])
    pre = evaluate_all(model, compiled, cfg, val_tokens, table, device, final_modes)
    rd.metric(kind="val", step=steps, val_loss=pre["plain"].loss, val_bpb=pre["plain"].bpb, train_s=train_time)
    for m, r in pre.items():
        log(f"pre-quant {m} (step {steps}): val_loss:{r.loss:.4f} val_bpb:{r.bpb:.4f} eval:{r.seconds:.1f}s")

    # ---- artifact: quantize, compress, write; then reload from disk and score ----
    art = rd.file("model.pgz") if rd.active else None
    nbytes = 0
    used = cfg.quant
    if info.is_main:
        state = {k: v for k, v in model.state_dict().items()}
        result, used, data = quantize_to_budget(state, cfg.quant, cfg.model.__dict__,
                                                {"recipe": cfg.name, "steps": steps, "config": cfg.to_dict()},
                                                code_bytes, log)
        if used != cfg.quant:
            log(f"artifact: fitted to the budget with {policy_of(used)}")
        nbytes = write_atomic(art, data)
        worst = max(result.records, key=lambda r: r.rel_error)
        log(f"artifact: {art} model:{nbytes:,} bytes code:{code_bytes:,} total:{nbytes + code_bytes:,} "
            f"(predicted model {predicted:,}, {100 * (predicted - nbytes) / max(nbytes, 1):+.1f}%) "
            f"worst rel. error {worst.rel_error:.4f} ({worst.name}, {worst.fmt})")
    art_path = broadcast_object(str(art) if art is not None else None, info)
    if art_path is None:
        raise RuntimeError("the roundtrip needs a run directory to write the artifact to")
    _, deq = read_artifact(art_path)
    model.load_state_dict(deq, strict=True)
    modes = ["plain"] + (["sliding"] if cfg.eval.sliding_stride > 0 else []) + (["ttt"] if cfg.eval.ttt else [])
    rt = evaluate_all(model, compiled, cfg, val_tokens, table, device, modes)
    for m, r in rt.items():
        log(f"roundtrip {m}: val_loss:{r.loss:.4f} val_bpb:{r.bpb:.8f} eval:{r.seconds:.1f}s")
    total = nbytes + code_bytes
    final = rt[cfg.eval.final]
    summary = {
        "recipe": cfg.name, "seed": cfg.train.seed, "world_size": info.world_size, "steps": steps,
        "train_time_s": train_time, "ms_per_step": ms_step, "tokens_per_s": tokens_per_step * steps / max(train_time, 1e-9),
        "peak_mem_mib": peak_mem, "params": n_params, "attention": backend, "torch": torch.__version__,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "prequant": {m: {"val_loss": r.loss, "val_bpb": r.bpb, "eval_s": r.seconds} for m, r in pre.items()},
        "roundtrip": {m: {"val_loss": r.loss, "val_bpb": r.bpb, "eval_s": r.seconds, "tokens": r.tokens,
                          "bytes": r.bytes} for m, r in rt.items()},
        "final_mode": cfg.eval.final, "val_loss": final.loss, "val_bpb": final.bpb,
        "bytes_model": nbytes, "bytes_code": code_bytes, "bytes_total": total, "bytes_predicted_model": predicted,
        "over_budget": total > cfg.quant.budget_bytes,
        "quant_used": policy_of(used), "quant_predicted": policy_of(predicted_policy), "qat_from_step": qat_fired_step, "data": str(data_dir),
        "embedded_data": embedded, "artifact": str(art_path),
    }
    rd.write_json("summary.json", summary)
    rd.metric(kind="final", **{k: v for k, v in summary.items() if not isinstance(v, dict)})
    if info.is_main:
        plot_run(rd.path)
    log(f"final ({cfg.eval.final}, roundtrip): val_loss:{final.loss:.8f} val_bpb:{final.bpb:.8f} "
        f"bytes_total:{total:,} (model {nbytes:,} + code {code_bytes:,})")
    if total > cfg.quant.budget_bytes:
        log(f"ERROR: artifact over budget: {total:,} > {cfg.quant.budget_bytes:,} bytes (everything is kept in {rd.path})")
    if resume or segmented:
        if info.distributed:
            dist.barrier()
        if info.is_main:
            CK.remove(run_dir)  # consumed: the run is complete
    rd.close()
    return summary


def _pause(rd, log, info: DistInfo, run_dir, model, optimizers, loader, averager, step: int, train_s: float,
           prev_prog: float, qat_step) -> dict:
    """Write this rank's checkpoint, then (rank 0, after all ranks) the meta file that makes it complete."""
    t = time.perf_counter()
    state = {"model": model.state_dict(), "optimizers": [o.state_dict() for o in optimizers],
             "loader": loader.state_dict(), "averager": averager.state_dict() if averager is not None else None,
             "step": step, "train_s": train_s, "prev_prog": prev_prog, "qat_step": qat_step}
    CK.save_rank(run_dir, info.rank, state)
    if info.distributed:
        dist.barrier()
    if info.is_main:
        CK.write_meta(run_dir, {"world_size": info.world_size, "step": step, "train_s": train_s})
    log(f"paused: step {step}, {train_s:.1f}s of training; checkpoint {CK.checkpoint_dir(run_dir)} written in "
        f"{time.perf_counter() - t:.1f}s. Continue with: pgolf train --resume {run_dir} (or train_gpt.py --resume; "
        "same number of processes)")
    summary = {"paused": True, "steps": step, "train_time_s": train_s, "checkpoint": str(CK.checkpoint_dir(run_dir))}
    rd.metric(kind="paused", step=step, train_s=train_s)
    rd.close()
    return summary
