import os
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def pytest_configure(config):
    # Keep the embedded corpus and runs out of the home folder; one build per test session.
    os.environ.setdefault("PGOLF_CACHE", tempfile.mkdtemp(prefix="pgolf-cache-"))
    os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def embedded_dir():
    from pgolf.embedded import ensure_embedded

    return ensure_embedded(log=lambda *a: None)


@pytest.fixture(scope="session")
def sp1024():
    path = SHARED / "tokenizers" / "fineweb_1024_bpe.model"
    if not path.exists():
        pytest.skip("../shared/tokenizers/fineweb_1024_bpe.model not present")
    from pgolf.tokenizer import load_sentencepiece

    return load_sentencepiece(path)


def tiny_overrides(**over) -> list[str]:
    """--set strings for a model small enough for many CPU runs in a test session (on top of 'smoke')."""
    base = {
        "model.num_layers": 2, "model.model_dim": 64, "model.num_heads": 4, "model.num_kv_heads": 2,
        "train.seq_len": 32, "train.batch_tokens": 512, "train.micro_batch_tokens": 256, "train.iterations": 12,
        "train.warmup_steps": 1, "train.val_every": 0, "train.log_every": 1, "eval.max_tokens": 6000,
        "eval.batch_tokens": 2048, "eval.sliding_stride": 16, "eval.ttt_seq_len": 32, "eval.ttt_chunk": 16,
        "optim.muon_momentum_warmup_steps": 4,
    }
    base.update({k.replace("__", "."): v for k, v in over.items()})
    return [f"{k}={v}" for k, v in base.items()]


def tiny_config(**over):
    from pgolf.config import apply_overrides
    from pgolf.recipes import get_recipe

    return apply_overrides(get_recipe("smoke"), tiny_overrides(**over))


def run_cli(args, cwd=None, env=None, timeout=600):
    import subprocess

    e = dict(os.environ)
    e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
    if env:
        e.update(env)
    return subprocess.run([sys.executable, *args], cwd=cwd or REPO, env=e, capture_output=True, text=True,
                          timeout=timeout)


def toy_gpt():
    """A small GPT with every weight perturbed away from its init (zero projections included), seeded."""
    import torch

    from pgolf.config import ModelConfig
    from pgolf.model import GPT

    torch.manual_seed(0)
    m = GPT(ModelConfig(vocab_size=256, num_layers=2, model_dim=64, num_heads=4, num_kv_heads=2, bigram_buckets=64,
                        smear_gate=True))
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return m


def data_cli(argv: list[str]) -> int:
    """Run ``pgolf data ...`` through pgolf.datasets' parsers (the parser tree ``pgolf`` builds for them)."""
    import argparse

    from pgolf import datasets

    ap = argparse.ArgumentParser(prog="pgolf")
    datasets.add_parsers(ap.add_subparsers(dest="cmd", required=True))
    args = ap.parse_args(["data", *argv])
    return args.fn(args)
