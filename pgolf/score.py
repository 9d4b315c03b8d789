"""``pgolf eval ARTIFACT --data DIR``: rebuild the model from an artifact alone and score it.

The artifact carries the model config, the run's eval settings and the fingerprint of the tokenizer it trained
with, so the default modes and batch sizes are the run's, the printed val_bpb is the one the run printed, and a
tokenizer other than the run's is refused (its byte table would give another, wrong, number).
"""

from __future__ import annotations

import math

import torch

from .config import Config, InputError, ModelConfig, apply_overrides
from .data import prepare_data
from .dist import init_distributed
from .evaluate import EvalResult, check_modes, evaluate, find_docs, run_modes
from .model import GPT, apply_precision, compile_model
from .quant import read_artifact


def score_artifact(path: str, data: str | None = None, tokenizer: str | None = None, modes: list[str] | None = None,
                   overrides: list[str] | None = None, device: str = "auto", log=None,
                   sources: list[str] | None = None, sources_file: str = "") -> dict[str, EvalResult]:
    """The artifact's scores in ``modes`` (default: its run's); with ``sources`` (one per val document, read from
    ``sources_file``), each mode's ``doc_sums`` too, for ``by_source``."""
    header, state = read_artifact(path)
    meta = header.get("meta", {})
    run_cfg = meta.get("config")
    cfg = Config.from_dict(run_cfg) if run_cfg else Config()
    cfg.model = ModelConfig(**header["model"])
    cfg = apply_overrides(cfg, list(overrides or []))
    if not run_cfg and log:
        log(f"WARNING: {path} records no run config: eval settings (sequence length, stride, batch) are pgolf's "
            "defaults, not the run's; --set them to score it as its run did")
    if not modes:
        modes = run_modes(cfg)
    check_modes(cfg, modes, path)
    if data:
        cfg.data.path = data
        if not tokenizer:
            cfg.data.tokenizer = ""  # found next to the given data
    elif not cfg.data.path:
        raise InputError(f"{path}: no --data given and the artifact does not record the run's data")
    if tokenizer:
        cfg.data.tokenizer = tokenizer
    ds = prepare_data(cfg, log or (lambda *a: None), train=False)
    if log:
        log(f"bytes per val target: {ds.byte_source}")
    want = meta.get("tokenizer_sha256")
    if want and want != ds.tokenizer_sha256:
        raise InputError(f"{ds.tokenizer}: not the tokenizer {path} was trained with (sha256 {ds.tokenizer_sha256[:12]}"
                         f", the artifact records {want[:12]}); pass the run's --tokenizer")
    if sources is not None:
        n_docs = len(find_docs(ds.val_tokens, cfg.model.bos_id))
        if n_docs != len(sources):
            raise InputError(f"{sources_file}: {len(sources):,} documents, but the val set of {cfg.data.path} has "
                             f"{n_docs:,}: not the text it was built from")
    info = init_distributed(device)
    dev = info.device
    model = GPT(cfg.model).to(dev)
    apply_precision(model, dev)
    model.use_attention(dev)
    model.load_state_dict(state, strict=True)
    model.looped = True  # scored with its depth recurrence, as the run scored it
    evm = compile_model(model, dev.type == "cuda" and cfg.train.compile)
    return evaluate(model, evm, cfg, ds.val_tokens, ds.val_bytes, dev, modes, log, by_doc=sources is not None)


def by_source(result: EvalResult, sources: list[str]) -> dict[str, tuple[float, int, int, float]]:
    """A mode's score split by its documents' source: per source (in order of first appearance) its val_bpb, its
    documents, its scored tokens and its bytes, from ``result.doc_sums``."""
    groups: dict[str, list[tuple[float, int, float]]] = {}
    for src, sums in zip(sources, result.doc_sums, strict=True):
        groups.setdefault(src, []).append(sums)
    out = {}
    for src, rows in groups.items():
        r = EvalResult(math.fsum(r[0] for r in rows), sum(r[1] for r in rows), math.fsum(r[2] for r in rows))
        out[src] = (r.bpb, len(rows), r.tokens, r.bytes)
    return out
