"""Evaluation: val_bpb = sum NLL / (ln 2 * sum bytes), sums in float64, all-reduced, divided once.

Every mode scores the same targets -- every token of the validation stream after the first -- exactly once:
- plain:   non-overlapping windows of seq_len (a window's first tokens see little context);
- sliding: windows every ``stride`` tokens; each target is scored in the window that gives it the longest
           context (>= seq_len - stride tokens, except the first window's); the tail is never scored twice;
- ttt:     per document, chunk by chunk: score a chunk, then take one Adam step on per-document LoRA adapters
           using only that (already scored) chunk; adapters reset for every document.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .tokenizer import ByteTable


@dataclass
class EvalResult:
    nll: float  # sum of NLL in nats
    tokens: int
    bytes: float
    seconds: float = 0.0

    @property
    def loss(self) -> float:
        return self.nll / max(self.tokens, 1)

    @property
    def bpb(self) -> float:
        return self.nll / (math.log(2.0) * self.bytes) if self.bytes else float("nan")


def rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _reduce(sums: Tensor) -> Tensor:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(sums, op=dist.ReduceOp.SUM)
    return sums


def _autocast(device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def window_plan(n_tokens: int, seq_len: int, stride: int) -> list[tuple[int, int, int]]:
    """Windows as (start, first scored local position, length). Window ``ws`` reads tokens[ws : ws+len] and
    predicts tokens[ws+1 : ws+len+1]; it scores local positions [first, len). Targets 1..n_tokens-1 are covered
    exactly once (see tests/test_eval.py)."""
    if not 0 < stride <= seq_len:
        raise ValueError(f"stride must be in (0, seq_len], got {stride}")
    last = n_tokens - 1  # the largest target index
    plan = []
    ws = 0
    while True:
        first = 0 if ws == 0 else seq_len - stride
        if ws + first + 1 > last:
            break
        plan.append((ws, first, min(seq_len, last - ws)))
        ws += stride
    return plan


@torch.no_grad()
def eval_windows(model: nn.Module, tokens: Tensor, table: ByteTable, seq_len: int, stride: int,
                 batch_seqs: int, device: torch.device) -> EvalResult:
    """Sliding-window eval (plain eval is stride == seq_len). ``model(x, y, reduction='none')`` -> (B, T) nats."""
    import time

    t0 = time.perf_counter()
    rank, world = rank_world()
    plan = window_plan(tokens.numel(), seq_len, stride)
    mine = plan[len(plan) * rank // world: len(plan) * (rank + 1) // world]
    table = table.to(device)
    toks = tokens.to(device=device, dtype=torch.int64)
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # nll, tokens, bytes
    pos = torch.arange(seq_len, device=device)
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for i in range(0, len(mine), batch_seqs):
            batch = mine[i:i + batch_seqs]
            starts = torch.tensor([b[0] for b in batch] + [0] * (batch_seqs - len(batch)), device=device)
            firsts = torch.tensor([b[1] for b in batch] + [seq_len] * (batch_seqs - len(batch)), device=device)
            lens = torch.tensor([b[2] for b in batch] + [0] * (batch_seqs - len(batch)), device=device)
            idx = (starts[:, None] + pos[None, :]).clamp_max(toks.numel() - 2)
            x, y = toks[idx], toks[idx + 1]
            with _autocast(device):
                nll = model(x, y, reduction="none").float()
            mask = (pos[None, :] >= firsts[:, None]) & (pos[None, :] < lens[:, None])
            nbytes = table.count(x, y)
            sums[0] += (nll.double() * mask).sum()
            sums[1] += mask.sum()
            sums[2] += (nbytes * mask).sum()
    model.train(was_training)
    sums = _reduce(sums)
    return EvalResult(sums[0].item(), int(sums[1].item()), sums[2].item(), time.perf_counter() - t0)


# ---------------- LoRA test-time training ----------------

class BatchedLoRA(nn.Module):
    """Independent rank-r adapters per batch element: delta(x) = x A^T B^T, A (bsz, r, in), B (bsz, out, r)."""

    def __init__(self, bsz: int, d_in: int, d_out: int, rank: int, gen: torch.Generator | None = None):
        super().__init__()
        self.A = nn.Parameter(torch.empty(bsz, rank, d_in))
        self.B = nn.Parameter(torch.empty(bsz, d_out, rank))
        self.reset(gen)

    @torch.no_grad()
    def reset(self, gen: torch.Generator | None = None) -> None:
        bound = 1.0 / math.sqrt(self.A.size(-1))
        self.A.copy_(torch.rand(self.A.shape, generator=gen) * (2 * bound) - bound)
        self.B.zero_()

    def forward(self, x: Tensor) -> Tensor:
        return (x @ self.A.transpose(1, 2).to(x.dtype)) @ self.B.transpose(1, 2).to(x.dtype)


class TTTAdapters(nn.Module):
    """Adapters on every block's q and v projections and on the LM head (the interface GPT.forward expects)."""

    def __init__(self, model, bsz: int, rank: int, seed: int = 0):
        super().__init__()
        d, V = model.cfg.model_dim, model.tok_emb.weight.size(0)
        kv = model.cfg.num_kv_heads * model.cfg.head_dim
        g = torch.Generator().manual_seed(seed)  # deterministic adapters, whatever the global RNG state
        self.qs = nn.ModuleList(BatchedLoRA(bsz, d, d, rank, g) for _ in model.blocks)
        self.vs = nn.ModuleList(BatchedLoRA(bsz, d, kv, rank, g) for _ in model.blocks)
        self.lm = BatchedLoRA(bsz, d, V, rank, g)

    def q(self, layer: int, x: Tensor) -> Tensor:
        return self.qs[layer](x)

    def v(self, layer: int, x: Tensor) -> Tensor:
        return self.vs[layer](x)

    def head(self, h: Tensor) -> Tensor:
        return self.lm(h)



def find_docs(tokens: Tensor, bos_id: int) -> list[tuple[int, int]]:
    """Documents as (start, length); each includes the next document's BOS as its last target, so the targets of
    all documents are exactly tokens[1:]. Tokens before the first BOS form a document of their own."""
    n = tokens.numel()
    bos = (tokens == bos_id).nonzero().flatten().tolist()
    starts = ([0] if not bos or bos[0] != 0 else []) + bos
    docs = []
    for i, s in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else n - 1  # inclusive index of the last target
        if end > s:
            docs.append((s, end - s + 1))
    return docs


def ttt_chunks(pred_len: int, chunk: int, seq_len: int) -> list[tuple[int, int, int]]:
    """For one document with ``pred_len`` targets: per chunk (window start, chunk start, chunk end), in target
    positions; the window x[ws:ce] gives each target the longest context up to ``seq_len``."""
    out = []
    for cs in range(0, pred_len, chunk):
        ce = min(cs + chunk, pred_len)
        out.append((max(0, ce - seq_len), cs, ce))
    return out


def eval_ttt(model, tokens: Tensor, table: ByteTable, device: torch.device, *, rank_r: int = 8, lr: float = 0.01,
             chunk: int = 256, seq_len: int = 1024, batch_docs: int = 64, bos_id: int = 1,
             betas=(0.9, 0.95), trace: list | None = None) -> EvalResult:
    """LoRA TTT eval. ``trace``, when given, receives ("score"|"train", doc_start, target_lo, target_hi) events in
    stream target indices, so tests can check that nothing is trained on before it is scored."""
    import time

    t0 = time.perf_counter()
    rank, world = rank_world()
    docs = find_docs(tokens, bos_id)
    mine = docs[len(docs) * rank // world: len(docs) * (rank + 1) // world]
    mine.sort(key=lambda d: d[1])
    table = table.to(device)
    toks = tokens.to(device=device, dtype=torch.int64)
    sums = torch.zeros(3, dtype=torch.float64, device=device)
    was_training = model.training
    model.eval()
    req = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        for bi in range(0, len(mine), batch_docs):
            batch = mine[bi:bi + batch_docs]
            bsz = len(batch)
            lora = TTTAdapters(model, bsz, rank_r, seed=rank * 1_000_003 + bi).to(device)
            opt = torch.optim.Adam(lora.parameters(), lr=lr, betas=betas, eps=1e-10)
            plans = [ttt_chunks(n - 1, chunk, seq_len) for _, n in batch]
            for ci in range(max(len(p) for p in plans)):
                active = [ci < len(p) for p in plans]
                train_mask = [ci < len(p) - 1 for p in plans]  # the last chunk of a document is never trained on
                spans = [p[ci] if ci < len(p) else (0, 0, 0) for p in plans]
                W = max(ce - ws for ws, _, ce in spans)
                x = torch.zeros(bsz, W, dtype=torch.int64, device=device)
                y = torch.zeros(bsz, W, dtype=torch.int64, device=device)
                score = torch.zeros(bsz, W, dtype=torch.bool, device=device)
                for b, ((ds, _), (ws, cs, ce)) in enumerate(zip(batch, spans)):
                    if not active[b]:
                        continue
                    x[b, :ce - ws] = toks[ds + ws: ds + ce]
                    y[b, :ce - ws] = toks[ds + ws + 1: ds + ce + 1]
                    score[b, cs - ws: ce - ws] = True
                    if trace is not None:
                        trace.append(("score", ds, ds + cs + 1, ds + ce))
                need_train = any(train_mask)
                with torch.enable_grad() if need_train else torch.no_grad(), _autocast(device):
                    nll = model(x, y, reduction="none", lora=lora).float()  # (bsz, W)
                with torch.no_grad():
                    m = score.double()
                    sums[0] += (nll.detach().double() * m).sum()
                    sums[1] += m.sum()
                    sums[2] += (table.count(x, y) * m).sum()
                if need_train:
                    tm = torch.tensor(train_mask, device=device, dtype=nll.dtype)[:, None] * score.to(nll.dtype)
                    per_doc = (nll * tm).sum(1) / tm.sum(1).clamp_min(1)
                    opt.zero_grad(set_to_none=True)
                    per_doc.sum().backward()
                    opt.step()
                    if trace is not None:
                        for b, ((ds, _), (ws, cs, ce)) in enumerate(zip(batch, spans)):
                            if train_mask[b]:
                                trace.append(("train", ds, ds + cs + 1, ds + ce))
    finally:
        for p, r in zip(model.parameters(), req):
            p.requires_grad_(r)
        model.train(was_training)
    sums = _reduce(sums)
    return EvalResult(sums[0].item(), int(sums[1].item()), sums[2].item(), time.perf_counter() - t0)
