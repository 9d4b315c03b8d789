"""The training clock: one value per step, the same on every rank, feeding every schedule decision.

Training seconds exclude compile, warm-up, mid-run validation and the final evals. Each rank measures its own wall
time, but no decision uses it directly: after each step every rank posts (its elapsed seconds, whether it was asked
to stop) to an asynchronous MAX all-reduce over a CPU (gloo) group of its own (pgolf.dist), and the result is
collected ``LAG`` steps later, when it has long arrived. All ranks then hold the same ``agreed`` value, so LR, momentum, QAT, SWA/EMA and the stop
are decided identically everywhere, without a GPU sync (the reduce runs on host tensors) and without a host barrier
on the step's critical path. One process runs the same code with no group.

The stop is projected: the run ends before the step that would carry it past the budget (at the agreed mean step
time), so a run's training time stays within ``train.max_seconds`` instead of overshooting by a step or two.
"""

from __future__ import annotations

import time
from collections import deque

import torch
import torch.distributed as dist

LAG = 2  # steps between posting a measurement and using it
now = time.perf_counter  # the time source (tests skew it on one rank)


class TrainClock:
    def __init__(self, train_s: float = 0.0, step: int = 0, group=None):
        self.train_s = train_s  # training seconds accumulated while not running
        self.group = group  # a gloo process group, or None for one process
        self._t0: float | None = None
        self._pending: deque = deque()  # (step, buffer, work)
        self.agreed = train_s  # the max over ranks of the elapsed seconds at the end of step ``agreed_step``
        self.agreed_step = step
        self.interrupted = False  # any rank asked to stop (SIGINT/SIGTERM), as agreed
        self._span = (train_s, step)  # where this process's measurements started, for the mean step time

    # ---- local time ----
    def start(self) -> None:
        self._t0 = now()

    def stop(self, sync=None) -> float:
        """Stop counting (``sync``, e.g. torch.cuda.synchronize, runs first so queued GPU work is counted)."""
        if self._t0 is not None:
            if sync is not None:
                sync()
            self.train_s += now() - self._t0
            self._t0 = None
        return self.train_s

    def local(self) -> float:
        return self.train_s + (now() - self._t0 if self._t0 is not None else 0.0)

    # ---- the agreed value ----
    def post(self, step: int, interrupt: bool = False) -> None:
        """After ``step``: share this rank's elapsed seconds and stop request; collect what is ``LAG`` steps old."""
        buf = torch.tensor([self.local(), float(interrupt)], dtype=torch.float64)
        work = dist.all_reduce(buf, op=dist.ReduceOp.MAX, group=self.group, async_op=True) \
            if self.group is not None else None
        self._pending.append((step, buf, work))
        while len(self._pending) > LAG:
            self._collect()

    def drain(self) -> None:
        """Collect every posted value (at a pause or the end: every rank has posted the same steps)."""
        while self._pending:
            self._collect()

    def _collect(self) -> None:
        step, buf, work = self._pending.popleft()
        if work is not None:
            work.wait()
        self.agreed, self.agreed_step = float(buf[0]), step
        self.interrupted = self.interrupted or bool(buf[1] > 0)

    def mean_step_s(self) -> float:
        t0, s0 = self._span
        return (self.agreed - t0) / (self.agreed_step - s0) if self.agreed_step > s0 else 0.0

    def estimate(self, step: int) -> float:
        """Elapsed training seconds when ``step`` steps are done, from the agreed value at the agreed mean step
        time: the same number on every rank. Schedules at step k read ``estimate(k)``; the loop stops before a step
        k with ``estimate(k + 1)`` past the budget."""
        return self.agreed + (step - self.agreed_step) * self.mean_step_s()

    def state(self) -> dict:
        return {"train_s": self.train_s}

