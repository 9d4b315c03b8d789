"""Evaluation: val_bpb = sum NLL / (ln 2 * sum bytes), float64 sums, divided once.

The work is cut into units (blocks of windows, documents) that are evaluated with the same shapes whatever the
process count; per-unit float64 sums are gathered and added exactly (``exact_total``), so every mode gives the same
val_bpb on 1 or N processes.

Every mode scores the same targets -- every token of the validation stream after the first -- exactly once:
- plain:   non-overlapping windows of seq_len (a window's first tokens see little context);
- sliding: windows every ``stride`` tokens; each target is scored in the window that gives it the longest
           context (>= seq_len - stride tokens, except the first window's); the tail is never scored twice;
- ttt:     per document, chunk by chunk: score a chunk, then take one AdamW step on per-document LoRA adapters
           using only that (already scored) chunk; every document starts from the same adapters.

The bytes of a scored target come from ``tokenizer.target_bytes``: the byte table's count of (previous, target),
or a byte sidecar's count of the original text (a CaseOps build); every mode indexes that one per-position tensor.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .config import TTT_TARGETS
from .dist import rank_world
from .model import compile_options
from .tokenizer import ByteTable, target_bytes


@dataclass
class EvalResult:
    nll: float  # sum of NLL in nats
    tokens: int
    bytes: float
    seconds: float = 0.0
    serial_s: float = 0.0  # of ``seconds``, the work every process repeats (phased TTT's global SGD)
    warmup_s: float = 0.0  # before ``seconds``, outside the eval timer: compiling on random tokens (compiled evals)
    # per document (``find_docs``' order): (nll, tokens, bytes) -- from TTT always, from the windowed modes with
    # ``by_doc``; for splitting a score by the documents' source (``pgolf eval --by-source``), not for the score
    doc_sums: list[tuple[float, int, float]] | None = None

    @property
    def loss(self) -> float:
        return self.nll / max(self.tokens, 1)

    @property
    def bpb(self) -> float:
        return self.nll / (math.log(2.0) * self.bytes) if self.bytes else float("nan")


# the challenge's FineWeb validation text, in bytes (derived from the records' logs of every tokenizer:
# ../shared/reference/parameter_golf.md 1.4): the same for any tokenizer, where its token count is not
CHALLENGE_VAL_BYTES = 151_080_363
CHALLENGE_GPUS = 8
CHALLENGE_EVAL_S = 600.0  # the eval's own 10 minutes on 8xH100 (parameter_golf.md 1)


def predicted_challenge_eval_s(seconds: float, val_bytes: float, world: int = 1, serial_s: float = 0.0) -> float:
    """An eval mode's wall time on the challenge's full validation set on 8 GPUs of the kind that ran it, from the
    time it took here on ``val_bytes`` of text: linear in the text scored (so in the tokens, at the tokenizer's
    bytes per token; golfbench's val runs 3% more bytes per sp1024 token than the challenge's), divided over the
    GPUs (each mode splits its work evenly) -- except ``serial_s``, work every process repeats (phased TTT's SGD on
    a fixed fraction of the documents), which grows with the text but is not divided. The eval budget is 600 s per
    mode set; compile warm-up outside the timer is not in ``seconds``."""
    ratio = CHALLENGE_VAL_BYTES / max(val_bytes, 1.0)
    return (seconds - serial_s) * world * ratio / CHALLENGE_GPUS + serial_s * ratio


CHALLENGE_EVAL_MARGIN = 0.1  # flagged this close under the budget: an H100 steps ~9% slower than an H200


def challenge_eval_note(predicted_s: float) -> str:
    """An eval line's note of its mode's ``predicted_challenge_eval_s``, flagged where that mode alone would pass the
    eval budget (the records time each scored mode on its own, compile warm-ups and diagnostic evals outside:
    frontier.md 2), or would come within ``CHALLENGE_EVAL_MARGIN`` of it: the prediction is for GPUs like the run's,
    and an H100 ran a step ~9% slower than an H200 (BENCHMARKS, sessions 3 and 18), so a mode predicted
    at 551 s of 600 on H200s (TTT at 3,072 tokens of context, session 20) is not known to fit."""
    if predicted_s > CHALLENGE_EVAL_S:
        flag = f", over the {CHALLENGE_EVAL_S:.0f} s eval budget"
    elif predicted_s > (1 - CHALLENGE_EVAL_MARGIN) * CHALLENGE_EVAL_S:
        flag = (f", within {CHALLENGE_EVAL_MARGIN:.0%} of the {CHALLENGE_EVAL_S:.0f} s eval budget: "
                "time it on the challenge's GPUs")
    else:
        flag = ""
    return f"(predicted on the challenge's full val set on 8 GPUs like these: {predicted_s:.0f}s{flag})"


def _autocast(device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def rank_range(n: int, rank: int, world: int) -> tuple[int, int]:
    """The contiguous share [lo, hi) of n work units that ``rank`` evaluates."""
    return n * rank // world, n * (rank + 1) // world


def exact_total(unit_sums: Tensor, n_units: int) -> tuple[float, int, float]:
    """(nll, tokens, bytes) over all ranks from each rank's per-unit float64 sums (rows: its ``rank_range`` units).

    Every rank's rows are gathered in unit order and added with ``math.fsum`` (exactly rounded, so independent of
    order and grouping): the total depends on the per-unit sums alone, never on how many processes computed them.
    A unit (a block of windows, a document) is always evaluated with the same shapes, so its sums are the same for
    any world size, and so is val_bpb."""
    rank, world = rank_world()
    rows = unit_sums.detach().double()
    if world > 1:
        sizes = [rank_range(n_units, r, world) for r in range(world)]
        width = max(hi - lo for lo, hi in sizes)
        pad = torch.zeros(width, 3, dtype=torch.float64, device=rows.device)
        pad[:rows.shape[0]] = rows
        parts = [torch.empty_like(pad) for _ in range(world)]
        dist.all_gather(parts, pad)
        rows = torch.cat([part[:hi - lo] for part, (lo, hi) in zip(parts, sizes)])
    cols = rows.cpu().tolist()
    return (math.fsum(r[0] for r in cols), int(round(math.fsum(r[1] for r in cols))), math.fsum(r[2] for r in cols))


class Progress:
    """Plain progress lines with an ETA from rank 0, at most every ``every_s`` seconds (no tqdm: the packed file
    runs without it)."""

    def __init__(self, label: str, total: int, log: Callable[[str], None] | None, every_s: float = 15.0):
        self.label, self.total, self.log, self.every_s = label, total, log, every_s
        self.t0 = self.last = time.perf_counter()

    def update(self, done: int) -> None:
        now = time.perf_counter()
        if self.log is None or now - self.last < self.every_s or done >= self.total:
            return
        self.last = now
        rate = done / max(now - self.t0, 1e-9)
        self.log(f"{self.label}: {done:,}/{self.total:,} ({100 * done / max(self.total, 1):.0f}%) "
                 f"elapsed {now - self.t0:.0f}s eta {(self.total - done) / max(rate, 1e-9):.0f}s")


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


def _warm_windows(model: nn.Module, batch_seqs: int, seq_len: int, last: int, device: torch.device) -> float:
    """One forward of ``model`` at the eval's shapes on random tokens (never the validation stream, #1530), so that
    a compiled graph is built before the eval's timer, as TTT's is: a fixed cost of the first call, which the
    challenge prediction would otherwise scale by the val set's size as if it were per-token work (a roundtrip
    sliding eval of `best` spent ~17 of its 52 s compiling, session 20). Seconds taken."""
    t0 = time.perf_counter()
    g = torch.Generator(device=device).manual_seed(0)  # not the global generator
    vocab = model.tok_emb.weight.size(0)
    x, y = (torch.randint(0, vocab, (batch_seqs, seq_len), generator=g, device=device) for _ in range(2))
    with torch.inference_mode(), _autocast(device):
        model(x, y, reduction="none", last=last)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


@torch.no_grad()
def eval_windows(model: nn.Module, tokens: Tensor, table: ByteTable | Tensor, seq_len: int, stride: int,
                 batch_seqs: int, device: torch.device, log: Callable[[str], None] | None = None,
                 label: str = "eval", first_model: nn.Module | None = None, warm_up: bool = False,
                 by_doc: bool = False, bos_id: int = 1) -> EvalResult:
    """Sliding-window eval (plain eval is stride == seq_len). ``model(x, y, reduction='none')`` -> (B, T) nats;
    ``table``: a ByteTable, or the bytes of every position of ``tokens`` as a target (``target_bytes``).

    The windows are cut into blocks of ``batch_seqs`` (one forward each, always full-size: the last block is padded
    with unscored windows); ranks take contiguous runs of blocks, and the per-block sums meet in ``exact_total``.
    Every window but the first scores only its last ``stride`` positions, so the head and the loss run only there
    (``model(..., last=stride)``); the block holding the first window runs them everywhere, through
    ``first_model`` where given: the eager model beside a compiled ``model``, whose graph fixes ``last``, so that a
    sliding eval compiles one graph, not two (the second cost ~16 s on an H200, session 13). ``warm_up`` (a compiled
    ``model``): that graph is built on random tokens before the timer (``_warm_windows``), its seconds in
    ``warmup_s``. ``by_doc``: also the sums of each document (split at ``bos_id``) in ``doc_sums`` (added in
    another order than the score's, atomically on a GPU: they agree with it to rounding); the score itself is the
    same either way."""
    t0 = time.perf_counter()
    rank, world = rank_world()
    plan = window_plan(tokens.numel(), seq_len, stride)
    n_blocks = math.ceil(len(plan) / batch_seqs)
    lo, hi = rank_range(n_blocks, rank, world)
    toks = tokens.to(device=device, dtype=torch.int64)
    nbytes = target_bytes(table, toks)  # (N,) int32
    sums = torch.zeros(hi - lo, 3, dtype=torch.float64, device=device)  # per block: nll, tokens, bytes
    if by_doc:  # the document of each target position: that of the last document start before it
        docs = find_docs(tokens, bos_id)
        is_start = torch.zeros(toks.numel(), dtype=torch.int64, device=device)
        is_start[[d[0] for d in docs]] = 1
        doc_of = torch.cumsum(is_start, 0) - 1
        doc_of = torch.cat([doc_of[:1], doc_of[:-1]])  # target t: the document of the token t - 1
        per_doc = torch.zeros(len(docs), 3, dtype=torch.float64, device=device)
    pos = torch.arange(seq_len, device=device)
    was_training = [(m, m.training) for m in (model, first_model) if m is not None]
    for m, _ in was_training:
        m.eval()
    warm_s = 0.0
    if warm_up and hi > lo:  # the graph of every block this rank runs through ``model`` (all the same shape)
        warm_s = _warm_windows(model, batch_seqs, seq_len, stride if stride < seq_len else 0, device)
        if log is not None and rank == 0:
            log(f"{label}: compile warm-up on random tokens {warm_s:.1f}s (before the eval timer)")
    progress = Progress(label, hi - lo, log if rank == 0 else None)  # after the warm-up: its elapsed and eta too
    with torch.inference_mode():
        for k, blk in enumerate(range(lo, hi)):
            batch = plan[blk * batch_seqs:(blk + 1) * batch_seqs]
            pad = batch_seqs - len(batch)
            starts = torch.tensor([b[0] for b in batch] + [0] * pad, device=device)
            firsts = torch.tensor([b[1] for b in batch] + [seq_len] * pad, device=device)
            lens = torch.tensor([b[2] for b in batch] + [0] * pad, device=device)
            idx = (starts[:, None] + pos[None, :]).clamp_max(toks.numel() - 2)
            x, y, yb = toks[idx], toks[idx + 1], nbytes[idx + 1]
            tail = stride if stride < seq_len and batch[0][0] > 0 else 0  # every window scores its last positions
            fwd = first_model if first_model is not None and not tail else model
            with _autocast(device):
                nll = fwd(x, y, reduction="none", last=tail).float()
            mask = (pos[None, :] >= firsts[:, None]) & (pos[None, :] < lens[:, None])
            if tail:
                mask, yb = mask[:, -tail:], yb[:, -tail:]
            sums[k, 0] = (nll.double() * mask).sum()
            sums[k, 1] = mask.sum()
            sums[k, 2] = (yb.double() * mask).sum()
            if by_doc:
                d = doc_of[idx + 1][:, -tail:] if tail else doc_of[idx + 1]
                per_doc.index_add_(0, d[mask], torch.stack([nll.double()[mask], torch.ones_like(d[mask]).double(),
                                                            yb.double()[mask]], 1))
            progress.update(k + 1)
    for m, training in reversed(was_training):
        m.train(training)
    nll, n, nbytes = exact_total(sums, n_blocks)
    doc_sums = None
    if by_doc:
        if world > 1:
            dist.all_reduce(per_doc)
        doc_sums = [(a, int(round(b)), c) for a, b, c in per_doc.cpu().tolist()]
    return EvalResult(nll, n, nbytes, time.perf_counter() - t0 - warm_s, warmup_s=warm_s, doc_sums=doc_sums)


# ---------------- LoRA test-time training ----------------

class BatchedLoRA(nn.Module):
    """Independent rank-r adapters per batch element: delta(x) = x A^T B^T, A (bsz, r, in), B (bsz, out, r).
    Every document starts from the same A (``init_A``, fixed by a seed) and B = 0, so a document's adapted scores
    depend on the document alone, not on its batch or rank. A batch of n < bsz documents uses the first n rows
    (the others get no gradient); ``reset`` puts every row back to its start (or only B, ``keep_a``), in place, so
    one set of adapters (and one compiled graph) serves every batch."""

    def __init__(self, init_A: Tensor, bsz: int, d_out: int):
        super().__init__()
        rank, d_in = init_A.shape
        self.register_buffer("A0", init_A.clone(), persistent=False)
        self.A = nn.Parameter(init_A.expand(bsz, rank, d_in).clone())
        self.B = nn.Parameter(torch.zeros(bsz, d_out, rank, dtype=init_A.dtype, device=init_A.device))

    @torch.no_grad()
    def reset(self, keep_a: bool = False) -> None:
        if not keep_a:
            self.A.copy_(self.A0.expand_as(self.A))
        self.B.zero_()

    def forward(self, x: Tensor) -> Tensor:
        n = x.size(0)
        return (x @ self.A[:n].transpose(1, 2).to(x.dtype)) @ self.B[:n].transpose(1, 2).to(x.dtype)


class TTTAdapters(nn.Module):
    """Per-document LoRA adapters on the projections named in ``targets`` (``eval.ttt_targets``): q, k, v (each
    block's attention inputs), o (its output projection, from the heads' concatenated output), mlp (a low-rank path
    beside each block's MLP, from its input to its output) and head (the LM head). Every adapter's output is scaled
    by ``alpha / rank`` when ``alpha`` > 0 (the records: 144 at rank 80-96), else left as it is. ``add`` is the
    interface GPT's forward calls."""

    def __init__(self, model, bsz: int, rank: int, seed: int = 0, targets=("q", "v", "head"), alpha: float = 0.0,
                 warm_a: bool = False):
        super().__init__()
        self.warm_a = warm_a
        c = model.cfg
        d, V = c.model_dim, model.tok_emb.weight.size(0)
        out = {"q": d, "k": c.num_kv_heads * c.head_dim, "v": c.num_kv_heads * c.head_dim, "o": d, "mlp": d,
               "head": V}
        assert set(targets) <= set(TTT_TARGETS), targets  # eval.ttt_targets is checked with the config
        dev = model.tok_emb.weight.device
        g = torch.Generator().manual_seed(seed)
        bound = 1.0 / math.sqrt(d)

        def lora(d_out: int) -> BatchedLoRA:  # U(-1/sqrt(in), 1/sqrt(in)), PyTorch's Linear default
            return BatchedLoRA((torch.rand(rank, d, generator=g, dtype=torch.float64) * 2 - 1).mul_(bound)
                               .float().to(dev), bsz, d_out)

        self.adapters = nn.ModuleDict({
            t: nn.ModuleList(lora(out[t]) for _ in range(1 if t == "head" else len(model.blocks)))
            for t in TTT_TARGETS if t in targets})
        self.scale = alpha / rank if alpha > 0 else None

    def add(self, target: str, layer: int, x: Tensor, out: Tensor) -> Tensor:
        """``out`` plus the adapter's output on ``x`` (``out`` itself where ``target`` has no adapter)."""
        if target not in self.adapters:
            return out
        delta = self.adapters[target][layer](x)
        return out + (delta if self.scale is None else delta * self.scale)

    def reset(self, full: bool = False) -> None:
        """Every adapter back to its seeded start (A) and zero (B), in place; with ``warm_a`` (``eval.ttt_warm_a``,
        #1767, the records' default) only B, unless ``full``: each row's A then carries what it learnt on the
        documents it adapted to before (scored already, so still score-first; but a document's score depends on
        which documents shared its row before it, so on the batching and the process count)."""
        for m in self.modules():
            if isinstance(m, BatchedLoRA):
                m.reset(keep_a=self.warm_a and not full)


def ttt_optimizer(params, lr: float, betas=(0.9, 0.95), wd: float = 0.0) -> torch.optim.Optimizer:
    """The TTT adapters' optimizer: AdamW (decoupled weight decay ``wd``; with 0, Adam's exact steps), eps 1e-10;
    fused on CUDA (one kernel for every adapter)."""
    params = list(params)
    return torch.optim.AdamW(params, lr=lr, betas=tuple(betas), eps=1e-10, weight_decay=wd,
                             fused=bool(params) and params[0].is_cuda)


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


def ttt_phase_plan(n_docs: int, phases: int, prefix_frac: float) -> list[tuple[int, int, int]]:
    """Phased TTT's plan, in document indices of the stream: per group of documents (first, end, sgd_end) -- score
    documents [first, end) with per-document LoRA, then, if ``sgd_end`` > 0, take one epoch of global SGD on the
    base weights over documents [0, sgd_end). The first ``prefix_frac`` of the documents is cut into ``phases``
    equal groups, each followed by SGD on everything scored so far (``sgd_end == end``); the rest is one group
    scored with the final weights. ``phases=0``: one group, no SGD (plain LoRA TTT). A document is always scored
    before any SGD that reads it: the legality test (tests/test_eval.py) hands the eval a plan that breaks this."""
    if phases <= 0 or n_docs == 0:
        return [(0, n_docs, 0)]
    prefix = min(n_docs, max(phases, round(prefix_frac * n_docs)))
    cuts = [round(prefix * k / phases) for k in range(phases + 1)]
    plan = [(a, b, b) for a, b in zip(cuts, cuts[1:]) if b > a]
    if prefix < n_docs:
        plan.append((prefix, n_docs, 0))
    return plan


@contextmanager
def _one_document_rows(model):
    """Every row of the batches inside holds one document's tokens (its BOS at most at position 0, zero padding
    after): a model with the document mask may take the causal kernels, the same scores (tests/test_eval.py)."""
    prev = getattr(model, "one_document_rows", None)
    if prev is not None:
        model.one_document_rows = True
    try:
        yield
    finally:
        if prev is not None:
            model.one_document_rows = prev


def _lora_score(fwd, lora: TTTAdapters, opt, toks: Tensor, docs: list[tuple[int, int]], idx: list[int],
                sums: Tensor, nbytes: Tensor, device: torch.device, chunk: int, seq_len: int, batch_docs: int,
                token_nll: dict[int, float] | None, progress: "Progress", done: int,
                short: tuple[int, int] = (0, 0)) -> int:
    """Score documents ``idx`` (rows of ``sums``) chunk by chunk with per-document LoRA (see ``eval_ttt``):
    ``fwd(x, y, lora, last)`` is the model's per-token loss (compiled, maybe); ``lora`` and ``opt`` are reset for
    every batch; ``nbytes``: the bytes of every position of ``toks`` as a target. ``short`` = (chunk, length): a
    document shorter than that length is scored and trained ``chunk`` tokens at a time (0: ``chunk`` for all); the
    two kinds never share a batch."""
    mine = sorted(idx, key=lambda i: docs[i][1])  # similar lengths share a batch
    short_chunk, short_len = short
    groups = [(chunk, mine)] if not short_chunk else [(short_chunk, [i for i in mine if docs[i][1] < short_len]),
                                                      (chunk, [i for i in mine if docs[i][1] >= short_len])]
    batches = [(c, g[bi:bi + batch_docs]) for c, g in groups for bi in range(0, len(g), batch_docs)]
    n_tok = toks.numel()
    for chunk, rows in batches:  # the batch's chunk from here on
        batch = [docs[i] for i in rows]
        bsz = len(batch)
        lora.reset()
        opt.state.clear()  # the next step starts Adam's moments from zero, as a fresh optimizer would
        plans = [ttt_chunks(n - 1, chunk, seq_len) for _, n in batch]
        row_ids = torch.tensor(rows, device=device)
        # (document start, chunk plan) per row; a batch of one gets an empty second row: a compiled graph never
        # sees batch size 1
        row_plans = [(ds, p) for (ds, _), p in zip(batch, plans)] + [(0, [])] * (bsz == 1)
        n_chunks = max(len(p) for p in plans)
        # (window start, chunk start, chunk end) in the stream, per chunk and row, sent to the device once a batch;
        # an inactive row is an empty window
        spans = torch.tensor([[(ds + p[ci][0], ds + p[ci][1], ds + p[ci][2]) if ci < len(p) else (0, 0, 0)
                               for ds, p in row_plans] for ci in range(n_chunks)], dtype=torch.int64).to(device)
        last_trained = torch.tensor([len(p) - 2 for _, p in row_plans], device=device)  # never a document's last
        for ci in range(n_chunks):
            ws, cs, ce = spans[ci].unbind(1)
            W = min((ci + 1) * chunk, seq_len)
            # every scored (and trained) target of a window lies in its last L positions: the head and the loss run
            # on those alone (a row's chunk ends at W, or, as its document's last chunk, inside the last L)
            L = min(chunk, W)
            col = torch.arange(W, device=device)
            pos = ws[:, None] + col  # stream index of each input position; its target is the next token
            valid = col < (ce - ws)[:, None]
            x = torch.where(valid, toks[pos.clamp(max=n_tok - 1)], 0)
            y = torch.where(valid, toks[(pos + 1).clamp(max=n_tok - 1)], 0)
            tail = pos[:, W - L:] + 1  # the targets of the last L positions
            score = (tail > cs[:, None]) & (tail <= ce[:, None])
            yb = torch.where(score, nbytes[tail.clamp(max=n_tok - 1)], 0)
            with torch.enable_grad(), _autocast(device):  # with gradients even where none is taken: one graph
                nll = fwd(x, y, lora, L).float()  # (rows, L)
            with torch.no_grad():
                m = score.double()
                per = torch.stack(((nll.detach().double() * m).sum(1), m.sum(1), (yb.double() * m).sum(1)), 1)
                sums[row_ids] += per[:bsz]
                if token_nll is not None:
                    for b in range(bsz):
                        for p in score[b].nonzero().flatten().tolist():
                            token_nll[int(tail[b, p])] = nll[b, p].item()
            if ci < n_chunks - 1:  # some row has a later chunk, so this one is trained on
                tm = (ci <= last_trained).to(nll.dtype)[:, None] * score.to(nll.dtype)
                per_doc = (nll * tm).sum(1) / tm.sum(1).clamp_min(1)
                opt.zero_grad(set_to_none=True)
                per_doc.sum().backward()
                opt.step()
        done += sum(n for _, n in batch)
        progress.update(done)
    return done


def _ttt_forward(model, compile_: bool):
    """TTT's per-token loss ``fwd(x, y, lora, last)``: the model's forward, or that forward compiled with dynamic
    shapes: one graph for every batch size of two or more and every window width (the head's positions are taken by
    a gather, so the first chunk, where window and head widths coincide, needs no graph of its own). TTT always
    calls it with gradients on (a no-grad call would compile another). Python floats (the RoPE base) are compiled
    as constants: traced as symbols, they made inductor restart the whole compile (~12% of it, on the CPU)."""
    def fwd(x: Tensor, y: Tensor, lora: TTTAdapters, last: int) -> Tensor:
        return model(x, y, reduction="none", lora=lora, last=last)
    if not compile_:
        return fwd
    compiled = torch.compile(fwd, dynamic=True, options=compile_options())

    def call(x: Tensor, y: Tensor, lora: TTTAdapters, last: int) -> Tensor:
        with torch._dynamo.config.patch(specialize_float=True):
            return compiled(x, y, lora, last)
    return call


def _warm_up(fwd, lora: TTTAdapters, opt, vocab: int, device: torch.device, chunk: int, seq_len: int,
             rows: int, short_chunk: int = 0) -> float:
    """Compile ``fwd`` on random tokens (never the validation stream): a full window and a first chunk (one graph
    serves both; the second call finds it), and a short document's first chunk where ``short_chunk``, each with a
    backward and an AdamW step, as TTT calls it; then put the adapters and the optimizer back to their start.
    Returns the seconds taken."""
    t0 = time.perf_counter()
    g = torch.Generator().manual_seed(0)
    shapes = [(seq_len, chunk), (chunk, chunk)] + ([(short_chunk, short_chunk)] if short_chunk else [])
    for W, last in shapes:  # (window, head positions); chunks fit the window (Config.validate)
        x, y = (torch.randint(0, vocab, (rows, W), generator=g).to(device) for _ in range(2))
        with torch.enable_grad(), _autocast(device):
            nll = fwd(x, y, lora, last).float()
        opt.zero_grad(set_to_none=True)
        nll.mean().backward()
        opt.step()
    opt.zero_grad(set_to_none=True)
    opt.state.clear()
    lora.reset(full=True)  # A too: the warm-up's random tokens must leave nothing behind
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def _global_sgd(model, span: Tensor, device: torch.device, *, seq_len: int, batch_seqs: int, lr: float,
                momentum: float, clip: float) -> int:
    """One epoch of SGD on the base weights over ``span`` (the tokens of the documents scored so far, in stream
    order), cut into non-overlapping windows of ``seq_len``; every rank runs the same steps on the same tokens (no
    gradient exchange, so the result does not depend on the process count), then rank 0's weights are broadcast so
    nondeterministic kernels cannot leave the ranks apart. Returns the tokens trained on."""
    params = [p for p in model.parameters() if p.is_floating_point()]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.SGD(params, lr=lr, momentum=momentum)
    n = span.numel() - 1
    starts = list(range(0, n, seq_len))
    for bi in range(0, len(starts), batch_seqs):
        group = starts[bi:bi + batch_seqs]
        W = min(seq_len, n - group[0])
        x = torch.zeros(len(group), W, dtype=torch.int64, device=device)
        y = torch.zeros_like(x)
        m = torch.zeros(len(group), W, dtype=torch.float32, device=device)
        for b, s in enumerate(group):
            k = min(W, n - s)
            x[b, :k], y[b, :k], m[b, :k] = span[s:s + k], span[s + 1:s + k + 1], 1.0
        with torch.enable_grad(), _autocast(device):
            nll = model(x, y, reduction="none").float()
            loss = (nll * m).sum() / m.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
    for p in params:
        p.requires_grad_(False)
        p.grad = None
    rank, world = rank_world()
    if world > 1:
        with torch.no_grad():
            for p in params:
                dist.broadcast(p.data, src=0)
    return n


def eval_ttt(model, tokens: Tensor, table: ByteTable | Tensor, device: torch.device, *, rank_r: int = 8,
             lr: float = 0.01, chunk: int = 256, seq_len: int = 1024, batch_docs: int = 64, bos_id: int = 1,
             betas=(0.9, 0.95), wd: float = 0.0, targets=("q", "v", "head"), alpha: float = 0.0, seed: int = 0,
             phases: int = 0, prefix_frac: float = 0.05, sgd_lr: float = 0.001, sgd_momentum: float = 0.9,
             sgd_batch_seqs: int = 32, sgd_clip: float = 1.0, compile_: bool = False, warm_a: bool = False,
             asym_softcap: bool = False, short_chunk: int = 0, short_len: int = 2048,
             log: Callable[[str], None] | None = None, token_nll: dict[int, float] | None = None) -> EvalResult:
    """LoRA TTT eval: per document, chunk by chunk, score the chunk, then one AdamW step on that document's adapters
    using only the chunk just scored (never the document's last chunk: nothing after it is scored). ``table``: a
    ByteTable, or the bytes of every position of ``tokens`` as a target (``target_bytes``).

    A document's score is a function of the model and that document: adapters start from the same seeded state for
    every document, documents in one batch never share gradients (the loss is a sum of per-document means and
    Adam is elementwise), and the window of chunk ``ci`` is always ``min((ci+1)*chunk, seq_len)`` wide. Batch size
    and process count only change how the work is cut. With ``warm_a`` (``eval.ttt_warm_a``) each adapter row keeps
    its A from document to document (B restarts at zero): a document's score then also depends on the documents
    its row adapted to before it -- all scored already (score-first holds), but which ones depends on the batching
    and the process count.

    Phased (``phases`` > 0, the 04-13/04-14 records): the first ``prefix_frac`` of the documents is scored in
    ``phases`` groups; after each group, one epoch of global SGD (``sgd_*``) on the base weights over every
    document scored so far (``ttt_phase_plan``). A document's score then depends on itself and the documents
    before it in the stream -- never on a later token. The base weights are restored afterwards.
    ``result.serial_s`` is the SGD's time, which every rank repeats (not divided over GPUs). With ``asym_softcap``
    (#1923) the logit softcap's positive and negative sides get caps of their own, both starting at
    ``model.logit_softcap`` (the scores unchanged until a phase trains them), which the global SGD trains with
    the base weights; they are gone afterwards. ``short_chunk`` (#2014, #2067): a document shorter than
    ``short_len`` tokens is scored and trained that many tokens at a time (more steps where a window is cheap).

    ``compile_``: the forward compiled (``_ttt_forward``), warmed up on random tokens before the timer starts, as
    the records do; the warm-up's seconds go to the log, not to ``result.seconds``.

    ``token_nll``, when given, receives every scored target's NLL under its index in ``tokens`` -- for the
    perturbation tests."""
    rank, world = rank_world()
    docs = find_docs(tokens, bos_id)
    plan = ttt_phase_plan(len(docs), phases, prefix_frac)
    toks = tokens.to(device=device, dtype=torch.int64)
    nbytes = target_bytes(table, toks)  # (N,) int32
    sums = torch.zeros(len(docs), 3, dtype=torch.float64, device=device)  # per document; rows of other ranks stay 0
    shares = [list(range(a + lo, a + hi)) for a, b, _ in plan for lo, hi in [rank_range(b - a, rank, world)]]
    was_training, req = model.training, [p.requires_grad for p in model.parameters()]
    saved = [p.detach().clone() for p in model.parameters()] if any(e for _, _, e in plan) else None
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        if asym_softcap:  # after ``saved``: the caps are not the model's, and leave with the eval
            cap = float(model.cfg.logit_softcap)
            model.softcap_caps = nn.Parameter(torch.full((2,), cap, device=toks.device), requires_grad=False)
        rows = max(batch_docs, 2)  # a batch of one document runs as two rows (``_lora_score``)
        lora = TTTAdapters(model, rows, rank_r, seed=seed, targets=targets, alpha=alpha, warm_a=warm_a)
        opt = ttt_optimizer(lora.parameters(), lr, betas, wd)
        fwd = _ttt_forward(model, compile_)
        warm = 0.0
        if compile_:
            with _one_document_rows(model):
                warm = _warm_up(fwd, lora, opt, model.tok_emb.weight.size(0), device, chunk, seq_len, rows,
                                short_chunk)
            if log is not None and rank == 0:
                log(f"ttt: compile warm-up on random tokens {warm:.1f}s (before the eval timer)")
        t0 = time.perf_counter()
        # progress in tokens, not documents: the batches go from short documents to long ones
        progress = Progress("ttt tokens", sum(docs[i][1] for s in shares for i in s), log if rank == 0 else None)
        done, sgd_s, sgd_tokens = 0, 0.0, 0
        for (a, b, sgd_end), mine in zip(plan, shares):
            with _one_document_rows(model):
                done = _lora_score(fwd, lora, opt, toks, docs, mine, sums, nbytes, device, chunk, seq_len,
                                   batch_docs, token_nll, progress, done, (short_chunk, short_len))
            if sgd_end > 0:
                t1 = time.perf_counter()
                s0, (s_last, n_last) = docs[0][0], docs[sgd_end - 1]
                sgd_tokens += _global_sgd(model, toks[s0:s_last + n_last], device, seq_len=seq_len,
                                          batch_seqs=sgd_batch_seqs, lr=sgd_lr, momentum=sgd_momentum, clip=sgd_clip)
                sgd_s += time.perf_counter() - t1
                if log is not None and rank == 0:
                    caps = "" if model.softcap_caps is None else \
                        ", softcap caps +{:.4f} / -{:.4f}".format(*model.softcap_caps.tolist())
                    log(f"ttt phase: documents {a:,}..{b - 1:,} scored; global SGD on documents 0..{sgd_end - 1:,} "
                        f"({s_last + n_last - s0:,} tokens) in {time.perf_counter() - t1:.1f}s{caps}")
    finally:
        model.softcap_caps = None
        if saved is not None:
            with torch.no_grad():
                for p, v in zip(model.parameters(), saved):
                    p.copy_(v)
        for p, r in zip(model.parameters(), req):
            p.requires_grad_(r)
        model.train(was_training)
    if world > 1:
        dist.all_reduce(sums)  # each row is one rank's (the others add exact zeros)
    cols = sums.cpu().tolist()
    nll, n, nbytes = math.fsum(r[0] for r in cols), int(round(math.fsum(r[1] for r in cols))), \
        math.fsum(r[2] for r in cols)
    return EvalResult(nll, n, nbytes, time.perf_counter() - t0, sgd_s, warm,
                      doc_sums=[(a, int(round(b)), c) for a, b, c in cols])


EVAL_MODES = ("plain", "sliding", "ttt")


def run_modes(cfg) -> list[str]:
    """The modes a run's config scores: plain, then sliding with a stride, then TTT when on."""
    return ["plain"] + (["sliding"] if cfg.eval.sliding_stride > 0 else []) + (["ttt"] if cfg.eval.ttt else [])


def check_modes(cfg, modes: list[str], where: str) -> None:
    """Refuse, before any work, eval modes that are unknown or that the config cannot run (InputError naming
    ``where``, e.g. the artifact or the run directory, and the --set that fixes it)."""
    from .config import InputError

    for mode in modes:
        if mode not in EVAL_MODES:
            raise InputError(f"{where}: unknown eval mode {mode!r}; modes: {', '.join(EVAL_MODES)}")
    if "sliding" in modes and cfg.eval.sliding_stride <= 0:
        raise InputError(f"{where}: the sliding mode needs a stride and this run's eval.sliding_stride is 0; "
                         "add --set eval.sliding_stride=64")


def evaluate(model, eval_model, cfg, val_tokens: Tensor, table: ByteTable | Tensor, device: torch.device,
             modes: list[str], log: Callable[[str], None] | None = None, by_doc: bool = False
             ) -> dict[str, EvalResult]:
    """The eval modes of a run's config: plain (non-overlapping windows of the eval length), sliding (stride
    ``eval.sliding_stride``) and ttt; ``table`` as in ``eval_windows`` (a run passes ``DataSet.val_bytes``).
    ``eval_model`` (compiled, maybe) runs the no-grad forwards; ``model`` the TTT, which needs gradients through
    adapters the compiled graph does not know. ``by_doc``: every mode's ``doc_sums`` too."""
    e = cfg.eval
    seq = e.seq_len or cfg.train.seq_len
    warm = eval_model is not model  # compiled: its graphs built on random tokens before each eval's timer
    out = {}
    for mode in modes:
        if mode == "plain":
            out[mode] = eval_windows(eval_model, val_tokens, table, seq, seq, max(1, e.batch_tokens // seq), device,
                                     log, "plain eval", warm_up=warm, by_doc=by_doc, bos_id=cfg.model.bos_id)
        elif mode == "sliding":
            out[mode] = eval_windows(eval_model, val_tokens, table, seq, e.sliding_stride, e.sliding_batch_seqs,
                                     device, log, "sliding eval", first_model=model, warm_up=warm, by_doc=by_doc,
                                     bos_id=cfg.model.bos_id)
        elif mode == "ttt":
            out[mode] = eval_ttt(model, val_tokens, table, device, **ttt_kwargs(cfg),
                                 compile_=e.ttt_compile and device.type == "cuda", log=log)
        else:
            raise ValueError(f"unknown eval mode {mode!r}")
    return out


def ttt_kwargs(cfg) -> dict:
    """``eval_ttt``'s settings from a run's config (also what the audit's TTT checks run with)."""
    e = cfg.eval
    return dict(rank_r=e.ttt_rank, lr=e.ttt_lr, betas=(e.ttt_beta1, e.ttt_beta2), wd=e.ttt_wd,
                targets=e.ttt_targets, alpha=e.ttt_alpha, chunk=e.ttt_chunk,
                seq_len=cfg.ttt_window(), batch_docs=e.ttt_batch_docs, bos_id=cfg.model.bos_id, phases=e.ttt_phases,
                prefix_frac=e.ttt_prefix_frac, sgd_lr=e.ttt_sgd_lr, sgd_momentum=e.ttt_sgd_momentum,
                sgd_batch_seqs=e.ttt_sgd_batch_seqs, sgd_clip=e.ttt_sgd_clip, warm_a=e.ttt_warm_a,
                asym_softcap=e.ttt_asym_softcap, short_chunk=e.ttt_short_chunk, short_len=e.ttt_short_len)
