"""The run directory: config.json, env.json, train_gpt.py (the packed file that trained), metrics.jsonl, train.log,
loss.png, summary.json, the artifact.

Only rank 0 writes, holding an exclusive lock on the folder for the whole run (a second run pointed at the same
folder stops with a clear error instead of interleaving its logs). Logs are appended line by line and flushed, so a
crash loses nothing already written; JSON and the artifact are written atomically.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from .config import InputError
from .files import LOCK_NAME, DirLock, atomic_write, write_json


def environment() -> dict:
    import torch

    env = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "argv": sys.argv,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "env": {k: v for k, v in os.environ.items() if k.startswith(("PGOLF_", "WORLD_SIZE", "RANK", "LOCAL_RANK",
                                                                      "NCCL_", "CUDA_VISIBLE"))},
    }
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
        env["gpu_count"] = torch.cuda.device_count()
    for mod in ("numpy", "sentencepiece", "zstandard"):
        try:
            env[mod] = __import__(mod).__version__
        except Exception:
            env[mod] = None
    try:
        here = Path(__file__).resolve().parent
        env["git"] = subprocess.run(["git", "-C", str(here), "rev-parse", "--short", "HEAD"], capture_output=True,
                                    text=True, timeout=5).stdout.strip() or None
    except Exception:
        env["git"] = None
    return env


class RunDir:
    """``fresh``: the folder must be new or empty (a finished or running run is never overwritten); otherwise (a
    resumed run) it continues the files in place."""

    def __init__(self, path: str | os.PathLike | None, active: bool = True, fresh: bool = True):
        self.active = active and path is not None
        self.path = Path(path) if path is not None else None
        self._lock = None
        if self.active:
            self._lock = DirLock(self.path).acquire()
            if fresh and any(p.name != LOCK_NAME for p in self.path.iterdir()):
                self._lock.release()
                raise InputError(f"run directory {self.path} already exists and is not empty; pick another --name")
            self._log = open(self.path / "train.log", "a", encoding="utf-8")
            self._metrics = open(self.path / "metrics.jsonl", "a", encoding="utf-8")

    def log(self, msg: str, console: bool = True) -> None:
        if not self.active:
            return
        if console:
            print(msg, flush=True)
        self._log.write(msg + "\n")
        self._log.flush()

    def metric(self, **rec) -> None:
        if not self.active:
            return
        self._metrics.write(json.dumps(rec) + "\n")
        self._metrics.flush()

    def write_json(self, name: str, obj) -> None:
        if self.active:
            write_json(self.path / name, obj)

    def write(self, name: str, data: bytes | str) -> int:
        return atomic_write(self.path / name, data) if self.active else 0

    def file(self, name: str) -> Path:
        return self.path / name

    def close(self) -> None:
        if self.active:
            self._log.close()
            self._metrics.close()
            self._lock.release()
            self.active = False


def read_metrics(run: str | os.PathLike) -> list[dict]:
    p = Path(run) / "metrics.jsonl"
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


def plot_run(run: str | os.PathLike) -> Path | None:
    """loss.png: train loss and val_bpb against step. Needs matplotlib; skipped (None) without it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception:
        return None
    recs = read_metrics(run)
    train = [(r["step"], r["loss"]) for r in recs if r.get("kind") == "train"]
    val = [(r["step"], r["val_bpb"]) for r in recs if r.get("kind") == "val"]
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    if train:
        ax[0].plot(*zip(*train), lw=0.8)
    ax[0].set(xlabel="step", ylabel="train loss (nats)", title="training loss")
    if val:
        ax[1].plot(*zip(*val), marker="o")
    ax[1].set(xlabel="step", ylabel="val_bpb", title="validation")
    fig.tight_layout()
    out = Path(run) / "loss.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
