"""Plots of runs: a run's loss.png (written at the end of every ``pgolf train``) and ``pgolf compare``'s picture.

    pgolf plot runs/RUN [runs/RUN2 ...]     # (re)draw loss.png, e.g. for a run of the packed train_gpt.py

The budget is wall-clock seconds, so the x axis is training seconds (steps on the top axis): runs with different
step times compare where it matters. The training loss is drawn raw (faint) and smoothed, with the LR scale on a
twin axis; the validation panel ends with the scored numbers of every eval mode, before (hollow) and after
(filled) the artifact's roundtrip; the title names the run and its score. Needs matplotlib (``pip install
'pgolf[plot]'``); without it a plot is skipped with one line. Drawn on a bare ``Figure`` (no pyplot): nothing
global changes in the process that calls it, a notebook included. Not packed into train_gpt.py.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

from .config import InputError
from .rundir import read_metrics

MODE_MARKERS = {"plain": "o", "sliding": "s", "ttt": "^"}
MODE_COLORS = {"plain": "tab:blue", "sliding": "tab:green", "ttt": "tab:red"}
GROUP_COLORS = ("tab:blue", "tab:orange")


def _figure(what: str, size: tuple[float, float]):
    """A matplotlib Figure, or None (and one line on stderr) without matplotlib."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        print(f"{what}: not drawn: matplotlib is not installed (pip install 'pgolf[plot]')", file=sys.stderr)
        return None
    return Figure(figsize=size)


def smooth(xs: list[float]) -> list[float]:
    """Debiased exponential moving average over about a tenth of the points (at most 50): the trend of a noisy
    loss, without the lag of an undebiased EMA at the start."""
    if not xs:
        return []
    beta = min(0.98, max(0.0, 1.0 - 10.0 / len(xs)))
    out, m = [], 0.0
    for i, x in enumerate(xs, 1):
        m = beta * m + (1 - beta) * x
        out.append(m / (1 - beta ** i) if beta > 0 else x)
    return out


def _linear_map(xs: list[float], ys: list[float]):
    """x -> y along the points (xs increasing), extended past both ends at the mean slope: an axis made with it
    puts no tick of a value beyond the run at the run's last point (interpolation alone clamps them there)."""
    import numpy as np

    slope = (ys[-1] - ys[0]) / (xs[-1] - xs[0])

    def f(x):
        x = np.asarray(x, dtype=float)
        y = np.interp(x, xs, ys)
        return np.where(x > xs[-1], ys[-1] + (x - xs[-1]) * slope, np.where(x < xs[0], ys[0] + (x - xs[0]) * slope, y))
    return f


def _summary(run: Path) -> dict:
    try:
        return json.loads((run / "summary.json").read_text())
    except (OSError, ValueError):
        return {}


def _curves(run: Path) -> tuple[list[dict], list[dict]]:
    recs = read_metrics(run)
    return ([r for r in recs if r.get("kind") == "train" and "elapsed_s" in r],
            [r for r in recs if r.get("kind") == "val" and "train_s" in r])


def _final_points(ax, s: dict, color: str | None = None, label: str = "") -> None:
    """The scored val_bpb of every eval mode at the end of training: pre-quant hollow, roundtrip filled."""
    x = s.get("train_time_s")
    if x is None:
        return
    for stage, filled in (("prequant", False), ("roundtrip", True)):
        for mode, r in (s.get(stage) or {}).items():
            ax.plot([x], [r["val_bpb"]], MODE_MARKERS.get(mode, "x"), ms=7, mfc=None if filled else "none",
                    color=color or MODE_COLORS.get(mode, "k"),
                    label=None if color else f"{label}{stage} {mode} {r['val_bpb']:.4f}")


def title_of(run: Path, s: dict) -> str:
    if s.get("status", "complete") != "complete" or "val_bpb" not in s:
        return f"{run.name} ({s.get('status', 'no summary')})"
    return (f"{run.name}: val_bpb {s['val_bpb']:.4f} ({s.get('final_mode', '?')}, roundtrip), "
            f"{s.get('bytes_total', 0):,} bytes{' OVER BUDGET' if s.get('over_budget') else ''}, "
            f"{s.get('steps', 0):,} steps in {s.get('train_time_s', 0):.0f} s")


def plot_run(run: str | os.PathLike, out: str | os.PathLike | None = None) -> Path | None:
    """Draw ``run``/loss.png (or ``out``): training loss and LR scale against training seconds, validation
    val_bpb with the final scores of every eval mode. None, with one line on stderr, without matplotlib."""
    run = Path(run)
    fig = _figure(f"{run / 'loss.png'}", (12, 4.6))
    if fig is None:
        return None
    train, val = _curves(run)
    s = _summary(run)
    ax, axv = fig.subplots(1, 2)
    if train:
        t = [r["elapsed_s"] for r in train]
        loss = [r["loss"] for r in train]
        ax.plot(t, loss, lw=0.6, alpha=0.3, color="tab:blue")
        ax.plot(t, smooth(loss), lw=1.6, color="tab:blue", label="train loss (smoothed)")
        lr = ax.twinx()
        lr.plot(t, [r.get("lr_scale", math.nan) for r in train], lw=1.0, ls="--", color="tab:gray")
        lr.set_ylabel("LR scale (dashed)")
        lr.set_ylim(0, 1.05)
        settled = smooth(loss)[len(loss) // 20:]  # the first steps' loss (~ln V) would flatten the rest
        if settled and max(settled) < max(loss):
            ax.set_ylim(min(loss) - 0.05 * (max(settled) - min(loss)), min(max(loss), 1.25 * max(settled)))
        steps = [r["step"] for r in train]
        if len(t) > 1 and all(b > a for a, b in zip(t, t[1:])) and steps[-1] > steps[0]:
            top = ax.secondary_xaxis("top", functions=(_linear_map(t, steps), _linear_map(steps, t)))
            top.set_xlabel("step")
            q = s.get("qat_from_step")
            if q:
                ax.axvline(float(_linear_map(steps, t)(q)), color="tab:red", lw=0.8, ls=":", label=f"QAT from step {q}")
    ax.set(xlabel="training seconds", ylabel="train loss (nats)")
    ax.legend(loc="upper right", fontsize=8)
    if val:
        axv.plot([r["train_s"] for r in val], [r["val_bpb"] for r in val], "-", color="tab:gray", lw=1,
                 marker=".", label="val_bpb (plain, pre-quant)")
    _final_points(axv, s)
    axv.set(xlabel="training seconds", ylabel="val_bpb", title="validation; final scores per eval mode")
    axv.legend(fontsize=8)
    fig.suptitle(title_of(run, s), fontsize=10)
    fig.tight_layout()
    path = Path(out) if out is not None else run / "loss.png"
    fig.savefig(path, dpi=110)
    return path


def plot_compare(groups: list[list[Path]], out: str | os.PathLike, names: tuple[str, ...] = ("A", "B")
                 ) -> Path | None:
    """Two groups of runs in one picture: smoothed training loss and validation against training seconds, with
    each run's final scores; the title holds each group's mean and std of the scored val_bpb."""
    fig = _figure(str(out), (12, 4.6))
    if fig is None:
        return None
    from .submission import mean_std

    ax, axv = fig.subplots(1, 2)
    title = []
    for runs, color, name in zip(groups, GROUP_COLORS, names):
        scores = []
        for i, run in enumerate(runs):
            train, val = _curves(run)
            s = _summary(run)
            label = f"{name}: {run.name}" if i < 4 else None
            if train:
                ax.plot([r["elapsed_s"] for r in train], smooth([r["loss"] for r in train]), color=color, lw=1.2,
                        alpha=0.8, label=label)
            if val:
                axv.plot([r["train_s"] for r in val], [r["val_bpb"] for r in val], color=color, alpha=0.8,
                         marker=".", lw=1)
            _final_points(axv, s, color)
            if "val_bpb" in s:
                scores.append(s["val_bpb"])
        if scores:
            m, sd = mean_std(scores)
            title.append(f"{name} (n={len(scores)}): {m:.4f} ± {sd:.4f}")
    for mode, marker in MODE_MARKERS.items():  # a legend of the markers alone
        axv.plot([], [], marker, color="k", mfc="none" if mode == "plain" else None, label=mode)
    ax.set(xlabel="training seconds", ylabel="train loss (nats, smoothed)")
    ax.legend(fontsize=7)
    axv.set(xlabel="training seconds", ylabel="val_bpb",
            title="validation; final scores (hollow pre-quant, filled roundtrip)")
    axv.legend(fontsize=7)
    fig.suptitle("scored val_bpb, mean ± std: " + " | ".join(title), fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    return Path(out)


def cmd_plot(args) -> int:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise InputError("pgolf plot needs matplotlib: pip install 'pgolf[plot]'") from None
    from .submission import find_runs

    for run in find_runs(args.runs):
        print(plot_run(run))
    return 0


def add_parsers(sub) -> None:
    from .cli import _examples

    p = sub.add_parser("plot", help="draw a run's loss.png again (training seconds, smoothed loss, LR, scores)",
                       description=__doc__.split("\n\n")[0],
                       **_examples("pgolf plot runs/RUN", "pgolf plot runs/GROUP   # every run in it"))
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories, or folders of runs")
    p.set_defaults(fn=cmd_plot)
