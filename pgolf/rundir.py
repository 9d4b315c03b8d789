"""The run directory: config.json, env.json, train_gpt.py (the packed file that trained), tokenizer.model (a copy,
for pgolf.load), metrics.jsonl, train.log, loss.png, summary.json, the artifact.

Only rank 0 writes, holding an exclusive lock on the folder for the whole run (a second run pointed at the same
folder stops with a clear error instead of interleaving its logs). Logs are appended line by line and flushed, so a
crash loses nothing already written; JSON and the artifact are written atomically. metrics.jsonl is the record; an
optional tracker (``train.tracker``: Weights & Biases or TensorBoard) gets a copy of each metric.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from . import __version__
from .config import InputError
from .files import LOCK_NAME, DirLock, atomic_write, sha256_bytes, write_json

NOT_GIT = "not a git checkout"


def install_commit() -> str:
    """The commit of the git checkout pgolf runs from (short hash, "+dirty" when pgolf/ has uncommitted changes),
    or "not a git checkout": an installed wheel, or a packed train_gpt.py (whose sha256 is its provenance)."""
    try:
        root = Path(__file__).resolve().parent.parent
    except NameError:  # a packed train_gpt.py: its modules have no file
        return NOT_GIT
    if not (root / ".git").exists():  # site-packages may sit inside some other checkout: never ask git there
        return NOT_GIT
    try:
        def git(*a: str) -> str:
            return subprocess.run(["git", "-C", str(root), *a], capture_output=True, text=True, timeout=5).stdout

        head = git("rev-parse", "--short", "HEAD").strip()
        dirty = git("status", "--porcelain", "--", "pgolf").strip()
    except Exception:
        return NOT_GIT
    return head + ("+dirty" if dirty else "") if head else NOT_GIT


def environment(code: str | None = None) -> dict:
    """The machine and software of a run; with ``code`` (the packed train_gpt.py), its sha256."""
    import torch

    env = {
        "pgolf": __version__,
        "git": install_commit(),
        "code_sha256": sha256_bytes(code.encode("utf-8")) if code is not None else None,
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
    return env


class Tracker:
    """A copy of each metric for Weights & Biases or TensorBoard (``train.tracker``). The package is imported only
    when asked for; missing or failing, that is one line in the log and the run goes on with metrics.jsonl alone."""

    def __init__(self, kind: str, run_dir: Path, config: dict, log):
        self.kind, self.log, self.sink = kind, log, None
        try:
            if kind == "wandb":
                import wandb

                self.sink = wandb.init(project="pgolf", name=run_dir.name, dir=str(run_dir), config=config)
            elif kind == "tensorboard":
                from torch.utils.tensorboard import SummaryWriter

                self.sink = SummaryWriter(str(run_dir / "tensorboard"))
        except Exception as e:
            self._fail(e)

    def _fail(self, e: Exception) -> None:
        self.sink = None
        hint = " (pip install 'pgolf[track]')" if isinstance(e, ImportError) else ""
        self.log(f"tracker: {self.kind} off: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}{hint}; "
                 "metrics.jsonl has everything")

    def __call__(self, rec: dict) -> None:
        if self.sink is None:
            return
        step = rec.get("step", rec.get("steps", 0))
        vals = {f"{rec.get('kind', 'metric')}/{k}": v for k, v in rec.items()
                if k not in ("kind", "step") and isinstance(v, (int, float)) and not isinstance(v, bool)}
        try:
            if self.kind == "wandb":
                self.sink.log(vals, step=step)
            else:
                for k, v in vals.items():
                    self.sink.add_scalar(k, v, step)
        except Exception as e:
            self._fail(e)

    def close(self) -> None:
        if self.sink is not None:
            try:
                self.sink.finish() if self.kind == "wandb" else self.sink.close()
            except Exception as e:
                self._fail(e)
            self.sink = None


class RunDir:
    """``fresh``: the folder must be new or empty (a finished or running run is never overwritten); otherwise (a
    resumed run) it continues the files in place."""

    def __init__(self, path: str | os.PathLike | None, active: bool = True, fresh: bool = True):
        self.active = active and path is not None
        self.path = Path(path) if path is not None else None
        self._lock = None
        self.tracker: Tracker | None = None
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
        if self.tracker is not None:
            self.tracker(rec)

    def start_tracker(self, kind: str, config: dict) -> None:
        """``train.tracker``: none, wandb or tensorboard (rank 0 only, as every write here)."""
        if self.active and kind != "none":
            self.tracker = Tracker(kind, self.path, config, self.log)

    def write_json(self, name: str, obj) -> None:
        if self.active:
            write_json(self.path / name, obj)

    def write(self, name: str, data: bytes | str) -> int:
        return atomic_write(self.path / name, data) if self.active else 0

    def file(self, name: str) -> Path:
        return self.path / name

    def close(self) -> None:
        if self.active:
            if self.tracker is not None:
                self.tracker.close()
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
    """Draw loss.png (pgolf.plots). None where it is not drawn: without matplotlib (one line on stderr says so),
    or in a packed train_gpt.py, which carries no plotting (``pgolf plot RUN`` draws it later)."""
    try:
        from .plots import plot_run as draw
    except ImportError:
        return None
    return draw(run)
