"""TTT's eval, eager against compiled (``eval.ttt_compile``), on a recipe's model (random init with non-zero output
projections, or an artifact's weights with --artifact) and the first DOCS documents of a val shard: the compile
warm-up, the timed seconds, tokens/s and val_bpb of each path; then one full-window step (fwd + bwd + AdamW) of
each, alone. The compiled path's scores differ from the eager one's by rounding only.

    python3 bench/ttt_speed.py --recipe best-sp8192 --data .data/golfbench_sp8192 \\
        --tokenizer .bench/tokenizers/fineweb_8192_bpe.model [--docs 128] [--phases 0] [--artifact model.pgz]

``--set KEY=VALUE`` changes the recipe as ``pgolf train`` would (e.g. ``--set train.seq_len=3072`` for TTT at a
3,072-token window on random weights: its time does not depend on what the weights learnt); each path's line
gives the challenge prediction of its seconds (``predicted_challenge_eval_s``, from the bytes scored). The
prediction wants the whole val set (the default): TTT batches documents by length, and the batch of the longest ones
costs about the same in any subset, so a subset overstates it (session 23, one H100: the first 800 of golfbench's
1,239 documents predicted 628 s, all of them 437 s).
"""
import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's pgolf, installed or not (the device)

from pgolf.config import apply_overrides
from pgolf.data import load_tokens
from pgolf.evaluate import (TTTAdapters, _autocast, _ttt_forward, challenge_eval_note, eval_ttt, find_docs,
                            predicted_challenge_eval_s, ttt_kwargs, ttt_optimizer)
from pgolf.model import GPT, apply_precision
from pgolf.recipes import get_recipe
from pgolf.tokenizer import build_byte_table, load_sentencepiece


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def step_ms(fwd, lora, opt, x, L, n=5) -> float:
    """Milliseconds of one TTT step (forward, backward, AdamW) on the batch x, after two untimed ones."""
    def once():
        with torch.enable_grad(), _autocast(x.device):
            nll = fwd(x, x.roll(-1, 1), lora, L).float()
        opt.zero_grad(set_to_none=True)
        nll.mean().backward()
        opt.step()
    once(), once()
    sync(x.device)
    t = time.perf_counter()
    for _ in range(n):
        once()
    sync(x.device)
    return (time.perf_counter() - t) / n * 1e3


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--recipe", default="best-sp8192")
    p.add_argument("--data", required=True)
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--docs", type=int, default=0, help="the first DOCS val documents (default 0: all of them)")
    p.add_argument("--phases", type=int, default=None, help="eval.ttt_phases (default: the recipe's)")
    p.add_argument("--artifact", default=None)
    p.add_argument("--paths", default="compiled,eager", help="which of compiled, eager to run")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a config override (repeatable)")
    a = p.parse_args()
    paths = [(n, n == "compiled") for n in a.paths.split(",")]
    sp = load_sentencepiece(a.tokenizer)
    cfg = get_recipe(a.recipe)
    vocab = [] if cfg.model.vocab_size else [f"model.vocab_size={sp.get_piece_size()}"]  # from the tokenizer
    cfg = apply_overrides(cfg, vocab + a.set).validate()
    dev = torch.device(a.device)
    if a.artifact:  # the model the artifact's own header describes, with its weights (pgolf.load)
        from pgolf.sample import load
        model = load(a.artifact, a.tokenizer, dev)[0]
    else:
        torch.manual_seed(0)
        model = GPT(cfg.model).to(dev)
        apply_precision(model, dev)
        model.use_attention(dev)
        with torch.no_grad():
            for q in model.parameters():
                if q.ndim == 2 and q.abs().sum() == 0:
                    q.normal_(0, 0.02)
    model.looped = True
    toks = load_tokens(sorted(Path(a.data).glob("fineweb_val_*.bin")))
    docs = find_docs(toks, model.cfg.bos_id)
    n = len(docs) if a.docs <= 0 else min(a.docs, len(docs))
    start, length = docs[n - 1]
    part = toks[docs[0][0]: start + length]  # the first n documents, each with its last target (the next BOS)
    table = build_byte_table(sp, model.cfg.vocab_size).to(dev)
    kw = ttt_kwargs(cfg)
    if a.phases is not None:
        kw["phases"] = a.phases
    print(f"recipe {a.recipe} attention {model.blocks[0].attn.backend} layers {len(model.layer_order(True))} "
          f"tokens {part.numel():,} TTT {kw}", flush=True)
    for name, comp in paths:
        sync(dev)
        t = time.perf_counter()
        r = eval_ttt(model, part, table, dev, compile_=comp, log=print, **kw)
        print(f"{name}: val_bpb {r.bpb:.8f} eval {r.seconds:.1f}s ({r.tokens / r.seconds:,.0f} tokens/s), "
              f"{time.perf_counter() - t:.1f}s with the warm-up "
              + challenge_eval_note(predicted_challenge_eval_s(r.seconds, r.bytes, 1, r.serial_s)), flush=True)
    e = cfg.eval
    lora = TTTAdapters(model, e.ttt_batch_docs, e.ttt_rank, targets=e.ttt_targets, alpha=e.ttt_alpha)
    opt = ttt_optimizer(lora.parameters(), e.ttt_lr, (e.ttt_beta1, e.ttt_beta2), e.ttt_wd)
    x = torch.randint(0, cfg.model.vocab_size, (e.ttt_batch_docs, cfg.ttt_window()), device=dev)
    for p_ in model.parameters():
        p_.requires_grad_(False)
    for name, comp in paths:
        print(f"{name}: {step_ms(_ttt_forward(model, comp), lora, opt, x, e.ttt_chunk):.1f} ms a "
              f"{tuple(x.shape)} step", flush=True)


if __name__ == "__main__":
    main()
