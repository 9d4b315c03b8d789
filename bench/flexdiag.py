"""Which compiled forwards of the document-masked frontier model at sp1024 (`best` with the mask on; session 9's
`frontier-sp1024`) run on this GPU (BENCHMARKS, sessions 9-10):

    python3 bench/flexdiag.py B MODE [dense]

B windows of 2,048 tokens in one forward; MODE: inference | nograd | train; ``dense``: the dense mask through SDPA
instead of FlexAttention's block mask (the model's size limit lifted, so B decides). Prints one FLEXDIAG line, OK
or the error. Run each case in its own process: a CUDA error poisons the context."""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's pgolf, installed or not (the device)

import pgolf.model as M
from pgolf.config import apply_overrides
from pgolf.recipes import get_recipe

B, mode, dense = int(sys.argv[1]), sys.argv[2], len(sys.argv) > 3
cfg = apply_overrides(get_recipe("best"), ["model.doc_mask=true"])
dev = torch.device("cuda")
torch.manual_seed(0)
m = M.GPT(cfg.model).to(dev)
with torch.no_grad():  # away from the zero-initialised projections, so attention carries signal
    for p in m.parameters():
        p.add_(0.02 * torch.randn_like(p))
m.use_attention(dev)
# measure FlexAttention itself at any size and grad mode (the model takes it only in training forwards up to
# FLEX_MAX_TOKENS); ``dense``: never
M._flex = (lambda backend, n_tokens: False) if dense else \
    (lambda backend, n_tokens: backend == "flex" and torch.compiler.is_compiling())
cm = torch.compile(m, dynamic=False, fullgraph=True)
T = cfg.train.seq_len
x = torch.randint(2, cfg.model.vocab_size, (B, T), device=dev)
x[:, ::700] = cfg.model.bos_id
y = torch.randint(0, cfg.model.vocab_size, (B, T), device=dev)
label = f"FLEXDIAG {B} {mode} {'dense' if dense else 'flex'}"
try:
    with torch.autocast("cuda", torch.bfloat16):
        if mode == "train":
            cm(x, y).backward()
        else:
            with torch.no_grad() if mode == "nograd" else torch.inference_mode():
                cm(x, y, reduction="none")
    torch.cuda.synchronize()
    print(label, "OK", flush=True)
except Exception as e:  # the report is the point: any failure, named
    print(label, "ERROR", type(e).__name__, str(e)[:200], flush=True)
