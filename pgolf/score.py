"""``pgolf eval ARTIFACT --data DIR``: rebuild the model from an artifact alone and score it.

The artifact carries the model config and the run's eval settings, so the default modes and batch sizes are the
run's and the printed val_bpb is the one the run printed.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .config import Config, InputError, apply_overrides
from .data import check_vocab, find_tokenizer, list_shards, load_tokens
from .dist import init_distributed
from .evaluate import EvalResult
from .config import ModelConfig
from .model import GPT, apply_precision, resolve_attention
from .quant import read_artifact
from .tokenizer import build_byte_table, check_space_piece, load_sentencepiece


def score_artifact(path: str, data: str | None = None, tokenizer: str | None = None, modes: list[str] | None = None,
                   overrides: list[str] | None = None, device: str = "auto") -> dict[str, EvalResult]:
    from .train import evaluate_all

    header, state = read_artifact(path)
    meta = header.get("meta", {})
    run_cfg = meta.get("config")
    cfg = Config.from_dict(run_cfg) if run_cfg else Config()
    cfg.model = ModelConfig(**header["model"])
    cfg = apply_overrides(cfg, list(overrides or []))
    if data:
        data_dir = Path(data)
        if not data_dir.is_dir():
            raise InputError(f"data folder not found: {data}")
    else:  # the run's own data, recorded in the artifact
        data_dir = Path(cfg.data.path)
        if not cfg.data.path or not data_dir.is_dir():
            raise InputError(f"{path}: no --data given and the run's data ({cfg.data.path or 'unknown'}) is not here")
    if tokenizer:
        tok = Path(tokenizer)
    elif not data and cfg.data.tokenizer:
        tok = Path(cfg.data.tokenizer)
    else:
        tok = find_tokenizer(data_dir)
    sp = load_sentencepiece(tok)
    check_space_piece(sp, str(tok))
    if int(sp.vocab_size()) != cfg.model.vocab_size:
        raise InputError(f"vocab mismatch: artifact {path} has vocab {cfg.model.vocab_size}, tokenizer {tok} has "
                         f"{int(sp.vocab_size())}")
    table = build_byte_table(sp, cfg.model.vocab_size)
    val = load_tokens(list_shards(data_dir, cfg.data.val_glob), cfg.eval.max_tokens)
    check_vocab(val, cfg.model.vocab_size, str(data_dir))
    info = init_distributed(device)
    dev = info.device
    model = GPT(cfg.model).to(dev)
    apply_precision(model, dev)
    model.set_attention_backend(resolve_attention(cfg.model.attention, dev))
    model.load_state_dict(state, strict=True)
    evm = torch.compile(model, dynamic=False, fullgraph=True) if (dev.type == "cuda" and cfg.train.compile) else model
    if not modes:
        modes = ["plain"] + (["sliding"] if cfg.eval.sliding_stride > 0 else []) + (["ttt"] if cfg.eval.ttt else [])
    return evaluate_all(model, evm, cfg, val, table, dev, modes)
