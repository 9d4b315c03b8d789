"""GPTQ's solve for a recipe's matrices, one by one against stacked by shape (``quant.gptq_many``), on random weights
and random positive-definite Hessians (the column loop's time does not depend on the values). Prints seconds and
checks that both give the same codes.

    python3 bench/gptq_speed.py --recipe best-sp8192 --vocab 8192 [--device cuda]
"""
import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's pgolf, installed or not (the device)

from pgolf.model import GPT
from pgolf.quant import bits_of, gptq_many, gptq_rows, quantize_tensor, storage_format, storage_group
from pgolf.recipes import get_recipe


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--recipe", default="best-sp8192")
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = p.parse_args()
    cfg = get_recipe(a.recipe)
    cfg.model.vocab_size = a.vocab
    torch.manual_seed(0)
    state = GPT(cfg.model).state_dict()
    jobs = []
    for name, t in state.items():
        fmt = storage_format(name, t, cfg.quant)
        if not fmt.startswith("int") or (name == "tok_emb.weight" and not cfg.quant.gptq_embed):
            continue
        w = torch.randn_like(t.float()) * 0.05
        X = torch.randn(2 * t.shape[1], t.shape[1], device=a.device, dtype=torch.float64)
        jobs.append((w, X.T @ X, quantize_tensor(w, fmt, cfg.quant, storage_group(name))[1], bits_of(fmt)))
    sync = torch.cuda.synchronize if a.device.startswith("cuda") else (lambda: None)
    gptq_many(jobs[:1])  # warm-up (kernels, cuSOLVER handles)
    sync()
    t0 = time.perf_counter()
    alone = [gptq_rows(*j) for j in jobs]
    sync()
    t1 = time.perf_counter()
    stacked = gptq_many(jobs)
    sync()
    t2 = time.perf_counter()
    same = all(torch.equal(x, y) for x, y in zip(alone, stacked))
    cols = sum(j[0].shape[1] for j in jobs)
    shapes = len({(tuple(j[0].shape), j[3]) for j in jobs})
    print(f"GPTQ {a.recipe} vocab {a.vocab} on {a.device}: {len(jobs)} matrices ({cols:,} columns, {shapes} stacks): "
          f"one by one {t1 - t0:.2f} s, stacked {t2 - t1:.2f} s, same codes: {same}")


if __name__ == "__main__":
    main()
