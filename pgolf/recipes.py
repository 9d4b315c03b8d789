"""Named recipes: functions that return a Config. A recipe reads like the experiment it is.

Batch sizes and budgets are at 8xH100 scale (the challenge's); the golfbench proxy runs one rank's share of the
global batch on one GPU (``pgolf train --gpu-share 8``).
"""

from __future__ import annotations

from typing import Callable

from .config import Config


def baseline() -> Config:
    """The challenge's naive baseline (records/track_10min_16mb/2026-03-17_NaiveBaseline): 9x512, GQA 8/4, MLP 2x,
    tied embeddings, Muon 0.04 / Adam, warm-down 1200 steps at the measured step time, int8 + zlib-9."""
    c = Config(name="baseline")
    c.schedule.warmdown_iters = 1200
    return c


def smoke() -> Config:
    """A tiny model that trains in about a minute on 2 CPU cores: the whole pipeline, end to end."""
    c = Config(name="smoke")
    m = c.model
    m.vocab_size = 0
    m.num_layers, m.model_dim, m.num_heads, m.num_kv_heads, m.mlp_mult = 4, 128, 4, 2, 2.0
    t = c.train
    t.seq_len, t.batch_tokens, t.micro_batch_tokens = 128, 4096, 2048
    t.iterations, t.max_seconds, t.warmup_steps, t.val_every, t.log_every = 250, 0.0, 2, 100, 10
    c.optim.muon_momentum_warmup_steps = 50
    c.schedule.warmdown_frac = 0.3
    c.eval.batch_tokens = 16384
    c.eval.sliding_stride = 32
    c.eval.sliding_batch_seqs = 32
    c.eval.ttt, c.eval.ttt_chunk, c.eval.ttt_seq_len, c.eval.ttt_batch_docs = True, 64, 128, 32
    c.quant.keep_float_max_numel = 4096  # so the tiny matrices are quantized like the real ones
    return c


RECIPES: dict[str, Callable[[], Config]] = {
    "baseline": baseline,
    "smoke": smoke,
}


def get_recipe(name: str) -> Config:
    if name not in RECIPES:
        raise KeyError(f"unknown recipe {name!r}; known: {', '.join(sorted(RECIPES))}")
    return RECIPES[name]().validate()
