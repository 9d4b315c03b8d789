"""Is a model's score a valid score? The four conditions of the challenge's "field guide" (issue #1017), each checked
mechanically on a small slice of tokens (CPU):

- causal: the NLL at a position never depends on a later token;
- normalised: the score is -log of a distribution over the vocabulary that sums to 1 (#886: a hashed n-gram
  mixture summed to ~277);
- score before update: a test-time-training eval scores every token before any update that used it (#402, #1082);
- single pass: every token of the stream is scored exactly once.

Each check takes what it judges as a function, so a test can hand it a cheating one:
- a *scorer* ``scorer(x, y) -> nll`` (B, T) in nats, what an eval sums (pgolf: ``model(x, y, reduction="none")``,
  with TTT adapters in the TTT mode). Inputs and targets are passed separately, so a scorer that reads ``x[t+1]``
  at position t is caught although in a real stream ``x[t+1]`` is ``y[t]``;
- a *distribution* ``dist(x) -> log-probabilities`` (B, T, V): what the scorer claims to score with;
- an *eval* ``eval_fn(model, tokens) -> EvalResult`` (pgolf.evaluate.eval_windows with the run's settings);
- a *TTT eval* with the signature of ``pgolf.evaluate.eval_ttt`` and its ``token_nll`` hook.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .evaluate import EvalResult, find_docs
from .tokenizer import ByteTable

Scorer = Callable[[Tensor, Tensor], Tensor]
Dist = Callable[[Tensor], Tensor]
NORM_TOL = 1e-6  # |sum of probabilities - 1| allowed (summed in float64: ~1e-15 for a softmax)


@dataclass
class Verdict:
    ok: bool
    detail: str


def _changed(ids: Tensor, vocab: int, g: torch.Generator) -> Tensor:
    """Other ids at every position (never the same id), so every changed position really changes."""
    return (ids + torch.randint(1, vocab, ids.shape, generator=g)) % vocab


@torch.no_grad()
def check_causal(scorer: Scorer, x: Tensor, y: Tensor, vocab: int, cuts: list[int] | None = None,
                 seed: int = 0) -> Verdict:
    """Change the inputs ``x`` from position k on, targets unchanged: the NLL at every position before k must stay
    the same bit for bit (a later token must not reach an earlier score: attention without a causal mask, a peek at
    the next input, a cache filled ahead). x, y: (B, T) ids."""
    T = x.size(1)
    cuts = cuts or sorted({max(1, T // 4), max(1, T // 2), max(1, 3 * T // 4), T - 1})
    g = torch.Generator().manual_seed(seed)
    base = scorer(x, y).double()
    seen = 0
    for k in cuts:
        x2 = x.clone()
        x2[:, k:] = _changed(x[:, k:], vocab, g)
        out = scorer(x2, y).double()
        moved = (out[:, :k] != base[:, :k]).any(0).nonzero().flatten()
        if moved.numel():
            p = int(moved[0])
            return Verdict(False, f"changing the tokens from position {k} on moved the NLL at position {p} "
                                  f"(by {float((out[:, p] - base[:, p]).abs().max()):.3g} nats): a score reads a "
                                  "later token")
        seen += bool((out[:, k:] != base[:, k:]).any())
    note = "" if seen else " (no later score moved either: the scorer ignores its context)"
    return Verdict(True, f"NLL before each change point unchanged bit for bit ({len(cuts)} cuts over {T} positions)"
                         + note)


@torch.no_grad()
def check_normalised(dist: Dist, scorer: Scorer, x: Tensor, y: Tensor, tol: float = NORM_TOL) -> Verdict:
    """At every position of ``x``: the probabilities ``exp(dist(x))`` over the vocabulary sum to 1 within ``tol``,
    and the scorer's NLL is -log of that distribution at the target (so the number summed is a normalised
    distribution's, whatever the scorer mixes in)."""
    logp = dist(x).double()  # (B, T, V)
    sums = logp.exp().sum(-1)
    worst = float((sums - 1.0).abs().max())
    if not worst <= tol:
        i = int((sums - 1.0).abs().flatten().argmax())
        return Verdict(False, f"probabilities over the {logp.size(-1)}-token vocabulary sum to "
                              f"{float(sums.flatten()[i]):.6f} at position {i % x.size(1)} (tolerance {tol:g})")
    nll = scorer(x, y).double()
    ref = -logp.gather(-1, y.long().unsqueeze(-1)).squeeze(-1)
    gap = float(((nll - ref).abs() / (1.0 + ref.abs())).max())
    if not gap <= tol:
        return Verdict(False, f"the scored NLL is not -log of the distribution (relative gap {gap:.3g} at worst): "
                              "the score comes from something else than the normalised distribution")
    return Verdict(True, f"sums within {worst:.1e} of 1 at {sums.numel()} positions; scored NLL = -log p(target) "
                         f"within {gap:.1e}")


def check_score_before_update(ttt: Callable, model: nn.Module, tokens: Tensor, table: ByteTable, bos_id: int,
                              kw: dict, device: torch.device | None = None, cuts: list[int] | None = None,
                              seed: int = 9, later_docs_fixed: bool = True) -> Verdict:
    """The perturbation test of a TTT eval: change the longest document from its position t on and run the eval
    again; every target before t in the stream must keep its score bit for bit (no update trained on a later token
    reached it) -- and, with ``later_docs_fixed`` (per-document TTT), every later document all of its scores too.
    Phased TTT trains the base weights on documents already scored, and warm A carries a row's adapters to its next
    document, so later documents may move there, earlier ones never. ``ttt(model, tokens, table, device,
    token_nll=dict, **kw)`` records each scored target's NLL under its index (pgolf.evaluate.eval_ttt's hook)."""
    device = device or torch.device("cpu")
    docs = find_docs(tokens, bos_id)
    ds, n = max(docs, key=lambda d: d[1])
    chunk = int(kw.get("chunk", 16))
    # inside the second chunk: its first half is scored by adapters that trained on chunk 1 only, its second half
    # is not yet scored when chunk 2's update would use it
    cuts = cuts or [t for t in (chunk + chunk // 2,) if t < n - 1] or [max(1, n // 2)]
    vocab = int(table.vocab_size)
    g = torch.Generator().manual_seed(seed)
    base: dict[int, float] = {}
    ttt(model, tokens, table, device, token_nll=base, **kw)
    for t in cuts:
        moved = tokens.clone()
        span = moved[ds + t:ds + n - 1]  # up to the next document's BOS, which stays
        new = _changed(span, vocab, g)
        new[new == bos_id] = (bos_id + 1) % vocab  # no new document boundary
        moved[ds + t:ds + n - 1] = new
        out: dict[int, float] = {}
        ttt(model, moved, table, device, token_nll=out, **kw)
        first = ds + t
        for j, v in sorted(base.items()):
            if (j < first or (later_docs_fixed and j >= ds + n)) and out.get(j) != v:
                where = "before the change" if j < first else "in another document"
                return Verdict(False, f"changing document at {ds} from its position {t} on moved the score of "
                                      f"target {j} ({where}): tokens reached scores before being scored "
                                      "(an update trained on them, or scoring after the update)")
    return Verdict(True, f"scores before each change ({len(cuts)} cuts, document of {n} tokens, chunk {chunk}) and "
                         "of other documents unchanged bit for bit")


class WeightProbe(nn.Module):
    """A stand-in model whose NLL at a position is a fixed random weight of the target id: an eval's NLL sum then
    says which targets it scored and how often (Σ w[target] over the stream, if each exactly once)."""

    def __init__(self, vocab: int, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        # multiples of 1/1024 in [0.5, 1.5): exact in the float32 an eval may cast to, so the sums are exact
        self.register_buffer("w", torch.randint(512, 1536, (vocab,), generator=g).double() / 1024)
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor, y: Tensor, reduction: str = "none", lora=None, last: int = 0) -> Tensor:
        y = y[:, -last:] if last else y  # the model's interface: ``last`` scores only the last positions
        return self.w[y.long()] + 0 * self.dummy


def check_single_pass(eval_fn: Callable[[nn.Module, Tensor], EvalResult], tokens: Tensor, vocab: int) -> Verdict:
    """Run ``eval_fn`` with a WeightProbe on ``tokens``: it must count n-1 targets and sum exactly the weights of
    targets 1..n-1 (a target skipped, or scored twice, changes the sum)."""
    probe = WeightProbe(vocab)
    r = eval_fn(probe, tokens)
    n = tokens.numel()
    want = math.fsum(probe.w[tokens[1:].long()].tolist())
    if r.tokens != n - 1:
        return Verdict(False, f"scored {r.tokens:,} targets of a {n:,}-token stream (should be {n - 1:,}: every token "
                              "after the first, once)")
    if abs(r.nll - want) > 1e-9 * want:
        return Verdict(False, f"the right count ({n - 1:,}) but not every target once: the probe's NLL sum is "
                              f"{r.nll:.6f}, {want:.6f} when each target is scored exactly once")
    return Verdict(True, f"{n - 1:,} targets of {n:,} tokens, each scored exactly once")


def check_single_pass_ttt(ttt: Callable, model: nn.Module, tokens: Tensor, table: ByteTable, kw: dict,
                          device: torch.device | None = None) -> Verdict:
    """A TTT eval through its ``token_nll`` hook: every target 1..n-1 recorded, n-1 counted, and the recorded NLLs
    add up to the eval's sum (a target scored twice would be counted twice in the sum, once in the record)."""
    rec: dict[int, float] = {}
    r = ttt(model, tokens, table, device or torch.device("cpu"), token_nll=rec, **kw)
    n = tokens.numel()
    missing = sorted(set(range(1, n)) - set(rec))
    if missing or r.tokens != n - 1:
        return Verdict(False, f"scored {r.tokens:,} targets, {len(rec):,} recorded, of {n - 1:,}"
                              + (f" (first missing: {missing[0]})" if missing else ""))
    total = math.fsum(rec.values())
    if abs(total - r.nll) > 1e-7 * max(1.0, abs(total)):
        return Verdict(False, f"recorded NLLs sum to {total:.6f} but the eval summed {r.nll:.6f}: some target was "
                              "scored more than once")
    return Verdict(True, f"{n - 1:,} targets of {n:,} tokens, each scored exactly once")
