"""Pause a run and resume it later: the whole training state, one file per rank.

A run with ``train.segment_seconds`` (or ``train.segment_steps``) stops after that much training in this process
and writes ``RUN/checkpoint/rank{r}.pt`` on every rank (model, optimizer states -- Muon's momentum lives only on
the rank that owns the matrix --, loader position, weight averager, step, training clock, QAT state), then
``RUN/checkpoint/meta.json`` last, so a checkpoint without it is incomplete. ``pgolf train --resume RUN`` picks the
run up with the same world size and goes on as if it had never stopped: the clock, schedules, data order and
averages continue, and the run ends with the usual export and evals. Each file is written to a temporary name and
renamed, so an interrupted save leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from .config import InputError
from .files import atomic_write, write_json

META = "meta.json"


def checkpoint_dir(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / "checkpoint"


def save_rank(run_dir, rank: int, state: dict) -> Path:
    d = checkpoint_dir(run_dir)
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"rank{rank}.pt"
    atomic_write(path, lambda f: torch.save(state, f))
    return path


def write_meta(run_dir, meta: dict) -> None:
    write_json(checkpoint_dir(run_dir) / META, meta)


def read_meta(run_dir) -> dict:
    p = checkpoint_dir(run_dir) / META
    if not p.is_file():
        raise InputError(f"{p}: no complete checkpoint to resume (the run finished, or it was never paused: "
                         "set train.segment_seconds or train.segment_steps to pause a run)")
    return json.loads(p.read_text())


def load_rank(run_dir, rank: int, world_size: int, device: torch.device) -> dict:
    meta = read_meta(run_dir)
    if meta["world_size"] != world_size:
        raise InputError(f"{checkpoint_dir(run_dir)}: saved by {meta['world_size']} processes, resumed with "
                         f"{world_size}; resume with the same --nproc_per_node")
    path = checkpoint_dir(run_dir) / f"rank{rank}.pt"
    if not path.is_file():
        raise InputError(f"{path}: missing (the checkpoint of rank {rank})")
    return torch.load(path, map_location=device, weights_only=False)


def remove(run_dir) -> None:
    d = checkpoint_dir(run_dir)
    if d.is_dir():
        for f in d.iterdir():
            f.unlink()
        d.rmdir()
