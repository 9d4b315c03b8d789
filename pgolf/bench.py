"""``pgolf bench``: where a recipe's training step spends its time, from the torch profiler.

    pgolf bench --recipe best --data DIR --gpu-share 8 [--steps 20] [--profile-steps 8] [--trace t.json]

Builds the run exactly as ``pgolf train`` does (checked data, model, compile warm-up, optimizers), times ``--steps``
steps without the profiler (ms/step, tokens/s, MFU, peak GPU memory of those steps), then profiles
``--profile-steps`` more and prints, per phase of the step (data, forward, backward, optimizer and its parts:
gradient exchange, clip, Adam, Muon), the GPU time of the kernels it launched and the host time it took, plus the
GPU's idle share of the step (time the host or a sync kept the GPU waiting) and the kernels that take the most GPU
time. ``--json FILE`` writes it all.

``--vs-log LOG`` sets the step beside a challenge record script's, run before on the same GPU (issue 11's side by
side in one command: ``bench/vs_record.sh``): from the record's log, its batch (``train_batch_tokens:``), its
processes (``world_size:``) and its last ``step_avg:``, its tokens/s per GPU, and the ratio of this run's to it.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import torch

from .config import InputError

PHASES = ("pgolf/data", "pgolf/forward", "pgolf/backward", "pgolf/optimizer", "pgolf/grad_exchange", "pgolf/clip",
          "pgolf/adam", "pgolf/muon")


PROFILE_TOLERANCE = 0.10  # profiled wall vs timed ms/step beyond which the report warns (the profiler adds ~1-3%)

# kernel classes by name, first match wins: what a step's GPU time is made of (cuBLAS/CUTLASS names on Hopper:
# nvjet_*, sm90_xmma_*, cutlass_*; inductor's Triton templates triton_tem_* and fused kernels triton_{poi,red,per}_*,
# whose names carry the ops they fused; cuDNN's and PyTorch's attention kernels)
KERNEL_CLASSES = (("matmul", ("triton_tem",)),
                  ("fused (triton)", ("triton_",)),
                  ("attention", ("flash", "fmha", "attn", "cudnn", "sdpa")),
                  ("matmul", ("gemm", "nvjet", "xmma", "cutlass", "cublas", "matmul", "mm_", "addmm", "bmm")),
                  ("reduce/collective", ("nccl", "reduce", "all_gather")),
                  ("copy/fill", ("copy", "memcpy", "memset", "fill", "cat", "index")))


def kernel_class(name: str) -> str:
    """The class of a kernel by its name (``KERNEL_CLASSES``), else "other"."""
    low = name.lower()
    return next((c for c, keys in KERNEL_CLASSES if any(k in low for k in keys)), "other")


def _time_steps(b, n: int, momentum: float) -> float:
    sync = torch.cuda.synchronize if b.device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    loss = None
    for _ in range(n):
        loss = b.train_step(1.0, momentum)
    if loss is not None:
        loss.item()
    sync()
    return (time.perf_counter() - t0) / max(n, 1)


def profile_steps(b, n: int, momentum: float, trace: str | None = None, top: int = 15) -> dict:
    """Profile ``n`` steps; per phase: GPU ms (kernels launched inside it) and host ms, per step."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if b.device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        wall = _time_steps(b, n, momentum)
    if trace:
        prof.export_chrome_trace(trace)
    from torch.autograd import DeviceType

    ka = prof.key_averages()
    dev_attr = "device_time_total" if hasattr(ka[0], "device_time_total") else "cuda_time_total"
    self_dev = "self_device_time_total" if hasattr(ka[0], "self_device_time_total") else "self_cuda_time_total"
    phases = {}
    for e in ka:
        if e.key in PHASES:
            phases[e.key.split("/", 1)[1]] = {"gpu_ms": getattr(e, dev_attr) / 1e3 / n,
                                              "host_ms": e.cpu_time_total / 1e3 / n}
    # the kernels themselves (the ops that launched them carry the same time again)
    kernels = sorted((e for e in ka if e.device_type == DeviceType.CUDA and getattr(e, self_dev) > 0
                      and e.key not in PHASES and not e.key.startswith(("Optimizer.", "ProfilerStep"))),
                     key=lambda e: -getattr(e, self_dev))  # ranges show up as GPU annotations too: not kernels
    busy = sum(getattr(e, self_dev) for e in kernels) / 1e3 / n
    classes: dict[str, float] = {}
    for e in kernels:
        c = kernel_class(e.key)
        classes[c] = classes.get(c, 0.0) + getattr(e, self_dev) / 1e3 / n
    if phases:  # backward runs on autograd's device thread, outside the main thread's ranges: the remainder
        named = sum(phases[k]["gpu_ms"] for k in ("data", "forward", "optimizer") if k in phases)
        phases["backward"] = {"gpu_ms": max(busy - named, 0.0), "host_ms": phases.get("backward", {}).get("host_ms", 0)}
    return {"wall_ms": 1e3 * wall, "gpu_busy_ms": busy, "phases": phases,
            "kernel_classes": dict(sorted(classes.items(), key=lambda kv: -kv[1])),
            "top_kernels": [{"name": e.key[:90], "gpu_ms": getattr(e, self_dev) / 1e3 / n, "calls": e.count // n}
                            for e in kernels[:top]]}


def record_rate(text: str, source: str = "log") -> dict:
    """A challenge record script's training rate from its log: its global batch (``train_batch_tokens:N``), its
    processes (``world_size:N``, 1 if absent) and its last ``step:S/... step_avg:X ms`` (training time over steps,
    the script's own clock). InputError naming ``source`` where a line is missing."""
    batch = re.search(r"\btrain_batch_tokens:(\d+)", text)
    world = re.search(r"\bworld_size:(\d+)", text)
    steps = re.findall(r"^step:(\d+)/\d+ .*?\bstep_avg:([0-9.]+)ms", text, re.M)
    if batch is None or not steps:
        missing = "train_batch_tokens:N" if batch is None else "a step:S/N ... step_avg:Xms line"
        raise InputError(f"--vs-log {source}: no {missing} in it (a record script's log is wanted)")
    step, ms = int(steps[-1][0]), float(steps[-1][1])
    n = int(world[1]) if world else 1
    return {"log": source, "batch_tokens": int(batch[1]), "world_size": n, "step": step, "step_avg_ms": ms,
            "tokens_per_s_per_gpu": int(batch[1]) / (ms / 1e3) / n}


def cmd_bench(args) -> int:
    from .cli import resolve_config
    from .data import prepare_data
    from .dist import cleanup_distributed, init_distributed
    from .train import build, configure_cuda, peak_flops, warm_up

    vs = None
    if args.vs_log:  # read before anything is built: a bad log is one line and exit 2
        try:
            text = Path(args.vs_log).read_text(errors="replace")
        except OSError as e:
            raise InputError(f"--vs-log {args.vs_log}: {e.strerror or e}") from None
        vs = record_rate(text, args.vs_log)
    cfg = resolve_config(args).validate()
    info = init_distributed(cfg.train.device)
    ok = False
    try:
        if info.device.type == "cuda":
            configure_cuda()
        log = print if info.is_main else (lambda *a, **k: None)
        data = prepare_data(cfg, log, info.rank, info.world_size, info.cpu_group)
        b = build(cfg, info, data, "", log, predict=False)
        warm_up(b, log)  # compile, then the initial state restored
        if args.qat and b.qat_policy is not None:
            b.set_qat(True)
        mom = cfg.optim.muon_momentum
        if b.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(b.device)
        step_s = _time_steps(b, args.steps, mom)
        peak_mib = torch.cuda.max_memory_allocated(b.device) / 2 ** 20 if b.device.type == "cuda" else None
        tokens = cfg.train.batch_tokens
        flops_tok = b.model.flops_per_token(cfg.train.seq_len)
        peak = peak_flops(b.device)
        prof = profile_steps(b, args.profile_steps, mom, args.trace, args.top)
        out = {"recipe": cfg.name, "device": torch.cuda.get_device_name(b.device) if b.device.type == "cuda" else "cpu",
               "torch": torch.__version__, "world_size": info.world_size, "attention": b.model.attention_label(),
               "batch_tokens": tokens, "ms_per_step": 1e3 * step_s, "tokens_per_s": tokens / step_s,
               "tokens_per_s_per_gpu": tokens / step_s / info.world_size, "peak_mem_mib": peak_mib,
               "mfu": flops_tok * tokens / step_s / info.world_size / peak if peak else None, **prof}
        if vs is not None:
            out["vs_record"] = {**vs, "ratio": out["tokens_per_s_per_gpu"] / vs["tokens_per_s_per_gpu"]}
        if info.is_main:
            print(report(out))
            if args.json:
                with open(args.json, "w") as f:
                    json.dump(out, f, indent=2)
        ok = True
    finally:
        cleanup_distributed(ok)
    return 0


def report(r: dict) -> str:
    mfu = f" MFU {100 * r['mfu']:.1f}%" if r.get("mfu") else ""
    mem = f", peak {r['peak_mem_mib']:,.0f} MiB allocated" if r.get("peak_mem_mib") else ""
    lines = [f"bench {r['recipe']}: {r['device']}, world {r['world_size']}, attention {r['attention']}, "
             f"{r['batch_tokens']:,} tokens/step",
             f"  {r['ms_per_step']:.1f} ms/step, {r['tokens_per_s']:,.0f} tokens/s "
             f"({r['tokens_per_s_per_gpu']:,.0f} per GPU){mfu}{mem}",
             f"  profiled: {r['wall_ms']:.1f} ms/step wall, GPU busy {r['gpu_busy_ms']:.1f} ms "
             f"({100 * r['gpu_busy_ms'] / max(r['wall_ms'], 1e-9):.0f}%), "
             f"idle {r['wall_ms'] - r['gpu_busy_ms']:.1f} ms"]
    off = r["wall_ms"] / max(r["ms_per_step"], 1e-9) - 1
    if abs(off) > PROFILE_TOLERANCE:  # session 14: 102.2 ms profiled against 63.1 timed, 44 ms of it idle
        lines.append(f"  WARNING: the profiled steps took {100 * off:+.0f}% against the timed ones: something else "
                     "ran in that window (a sync, the profiler's start, another process), so the phases below may "
                     "not be the step's; run again, or with more --profile-steps")
    lines.append(f"  {'phase':16s} {'GPU ms':>8s} {'host ms':>8s}")
    for name in [p.split("/", 1)[1] for p in PHASES]:
        if name in r["phases"]:
            ph = r["phases"][name]
            indent = "    " if name in ("grad_exchange", "clip", "adam", "muon") else "  "
            lines.append(f"{indent}{name:16s} {ph['gpu_ms']:8.2f} {ph['host_ms']:8.2f}")
    lines.append("  (backward GPU ms: the kernels no other phase launched)")
    if r.get("kernel_classes"):
        lines.append("  GPU ms/step by kernel class: " +
                     ", ".join(f"{c} {ms:.2f}" for c, ms in r["kernel_classes"].items()))
    lines.append("  top kernels (GPU ms/step, calls/step):")
    for k in r["top_kernels"]:
        lines.append(f"    {k['gpu_ms']:7.2f} {k['calls']:5d}  {k['name']}")
    if r.get("vs_record"):
        v = r["vs_record"]
        lines.append(f"  vs record ({v['log']}): step_avg {v['step_avg_ms']:.2f} ms at step {v['step']}, "
                     f"{v['batch_tokens']:,} tokens/step on {v['world_size']} GPU(s) = "
                     f"{v['tokens_per_s_per_gpu']:,.0f} tokens/s per GPU; this run {v['ratio']:.2f}x")
    return "\n".join(lines)


def add_parsers(sub) -> None:
    from .cli import _add_config_args

    p = sub.add_parser("bench", help="per-phase step time of a recipe from the torch profiler",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_config_args(p)
    p.add_argument("--steps", type=int, default=20, help="timed steps (after the compile warm-up)")
    p.add_argument("--profile-steps", type=int, default=8, help="profiled steps")
    p.add_argument("--qat", action="store_true", help="with QAT on (recipes that use it)")
    p.add_argument("--top", type=int, default=15, help="how many of the top kernels to list")
    p.add_argument("--trace", help="write a Chrome trace of the profiled steps")
    p.add_argument("--json", help="write the figures as JSON")
    p.add_argument("--vs-log", metavar="LOG", help="a challenge record script's log (run before on this GPU): its "
                   "tokens/s per GPU and this run's ratio to it")
    p.set_defaults(fn=cmd_bench)
