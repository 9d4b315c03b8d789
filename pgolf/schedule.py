"""Schedules as pure functions of the run's progress.

Progress is the fraction of the budget used: elapsed training seconds / max_seconds, or step / iterations when
the step cap is the tighter limit (or there is no time budget). Expressing warm-down, momentum warm-up and QAT
start as fractions makes one recipe behave the same on 8xH100 for 600 s and on one GPU for 240 s.
"""

from __future__ import annotations

from .config import OptimConfig, ScheduleConfig, TrainConfig


def progress(step: int, elapsed_s: float, train: TrainConfig) -> float:
    p = step / train.iterations
    if train.max_seconds > 0:
        p = max(p, elapsed_s / train.loop_seconds)
    return min(max(p, 0.0), 1.0)


def lr_scale(prog: float, warmdown_frac: float, min_scale: float = 0.0) -> float:
    """1 until the last ``warmdown_frac`` of the budget, then linear to 0 (floored at ``min_scale``)."""
    if warmdown_frac <= 0:
        return 1.0
    start = 1.0 - warmdown_frac
    if prog <= start:
        return 1.0
    return max((1.0 - prog) / warmdown_frac, min_scale)


def lr_scale_iters(step: int, elapsed_s: float, warmdown_iters: int, train: TrainConfig) -> float:
    """The challenge baseline's rule: a warm-down of N steps at the measured mean step time."""
    if warmdown_iters <= 0:
        return 1.0
    if train.loop_seconds <= 0:
        start = max(train.iterations - warmdown_iters, 0)
        return max((train.iterations - step) / warmdown_iters, 0.0) if step >= start else 1.0
    step_s = elapsed_s / max(step, 1)
    warmdown_s = warmdown_iters * step_s
    remaining = max(train.loop_seconds - elapsed_s, 0.0)
    return remaining / max(warmdown_s, 1e-9) if remaining <= warmdown_s else 1.0


def lr_multiplier(step: int, elapsed_s: float, sched: ScheduleConfig, train: TrainConfig) -> float:
    if sched.warmdown_iters > 0:
        return max(lr_scale_iters(step, elapsed_s, sched.warmdown_iters, train), sched.min_lr_scale)
    return lr_scale(progress(step, elapsed_s, train), sched.warmdown_frac, sched.min_lr_scale)


def muon_momentum(step: int, prog: float, cfg: OptimConfig) -> float:
    """Linear warm-up from muon_momentum_start to muon_momentum, over a fraction of the budget or N steps."""
    if cfg.muon_momentum_warmup_frac > 0:
        t = min(prog / cfg.muon_momentum_warmup_frac, 1.0)
    elif cfg.muon_momentum_warmup_steps > 0:
        t = min(step / cfg.muon_momentum_warmup_steps, 1.0)
    else:
        t = 1.0
    return (1 - t) * cfg.muon_momentum_start + t * cfg.muon_momentum


def qat_active(prog: float, sched: ScheduleConfig) -> bool:
    return sched.qat_start_frac > 0 and prog >= sched.qat_start_frac


def swa_take(step: int, scale: float, sched: ScheduleConfig, prog: float = 0.0, prev_prog: float = 0.0) -> bool:
    """SWA checkpoints once the LR multiplier is below ``swa_start_scale``: every ``swa_every`` steps, or each time
    progress crosses a multiple of ``swa_every_frac`` (the same number of checkpoints at any budget)."""
    if scale >= sched.swa_start_scale:
        return False
    if sched.swa_every_frac > 0:
        return int(prog / sched.swa_every_frac) > int(prev_prog / sched.swa_every_frac)
    return sched.swa_every > 0 and step % sched.swa_every == 0


def seq_points(sched: ScheduleConfig) -> list[tuple[float, int]]:
    return sched.seq_points if sched.seq_schedule else []


def seq_len_at(prog: float, sched: ScheduleConfig, train: TrainConfig) -> int:
    """Training context growth: the length of the last point of ``schedule.seq_schedule`` at or before ``prog``
    (train.seq_len without a schedule)."""
    n = train.seq_len
    for frac, length in seq_points(sched):
        if prog >= frac:
            n = length
    return n
