"""Every eval mode against a direct computation on toy data; every token scored exactly once."""
import math

import pytest
import torch

from pgolf.config import ModelConfig
from pgolf.evaluate import eval_ttt, eval_windows, find_docs, ttt_chunks, window_plan
from pgolf.model import GPT
from pgolf.tokenizer import ByteTable

V = 64


def toy_table():
    g = torch.Generator().manual_seed(1)
    base = torch.randint(1, 5, (V,), generator=g).to(torch.int16)
    space = torch.rand(V, generator=g) < 0.4
    boundary = torch.zeros(V, dtype=torch.bool)
    boundary[:4] = True
    base[:4] = 0
    return ByteTable(base, space, boundary)


def toy_model(**kw):
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=V, num_layers=2, model_dim=32, num_heads=4, num_kv_heads=2, **kw)
    m = GPT(cfg).double()
    with torch.no_grad():  # non-zero output projections so the context matters
        for p in m.parameters():
            if p.ndim == 2 and p.abs().sum() == 0:
                p.normal_(0, 0.05)
    return m.eval()


def toy_tokens(n, seed=0, bos_every=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(4, V, (n,), generator=g)
    if bos_every:
        t[::bos_every] = 1
        t[torch.rand(n, generator=g) < 0.02] = 1
    return t


def direct(model, tokens, table, context_start):
    """sum NLL and bytes, one forward per target j with context tokens[context_start(j):j]."""
    nll = 0.0
    nbytes = 0.0
    with torch.no_grad():
        for j in range(1, tokens.numel()):
            ctx = tokens[context_start(j):j][None]
            logits = model.logits(ctx)[0, -1].double()
            nll += (torch.logsumexp(logits, 0) - logits[tokens[j]]).item()
            nbytes += table.count(tokens[j - 1:j], tokens[j:j + 1]).item()
    return nll, nbytes


@pytest.mark.parametrize("n,L,stride", [(203, 32, 32), (203, 32, 8), (200, 32, 7), (33, 32, 8), (64, 16, 16)])
def test_window_plan_covers_each_target_once(n, L, stride):
    seen = []
    for ws, first, ln in window_plan(n, L, stride):
        assert 0 < ln <= L and first < ln
        seen += list(range(ws + first + 1, ws + ln + 1))
    assert seen == list(range(1, n))  # in order, no gaps, no duplicates (the challenge's tail double-count)


@pytest.mark.parametrize("n,L,stride", [(150, 32, 32), (150, 32, 8), (141, 16, 5)])
def test_windows_match_direct(n, L, stride):
    model, table, toks = toy_model(), toy_table(), toy_tokens(n)
    r = eval_windows(model, toks, table, L, stride, batch_seqs=3, device=torch.device("cpu"))
    if stride == L:
        start = lambda j: ((j - 1) // L) * L  # noqa: E731
    else:
        start = lambda j: max(0, math.ceil((j - L) / stride) * stride)  # noqa: E731
    nll, nbytes = direct(model, toks, table, start)
    assert r.tokens == n - 1
    assert r.bytes == pytest.approx(nbytes, abs=1e-9)
    assert r.nll == pytest.approx(nll, rel=1e-5)


def test_sliding_with_full_stride_is_plain():
    model, table, toks = toy_model(smear_gate=True, bigram_buckets=32), toy_table(), toy_tokens(300, bos_every=50)
    a = eval_windows(model, toks, table, 32, 32, 4, torch.device("cpu"))
    b = eval_windows(model, toks, table, 32, 32, 7, torch.device("cpu"))
    assert a.nll == pytest.approx(b.nll, rel=1e-9) and a.bytes == b.bytes and a.tokens == b.tokens == 299


def test_find_docs_targets_are_the_stream():
    toks = torch.tensor([5, 6, 1, 7, 8, 9, 1, 1, 4, 5])
    docs = find_docs(toks, 1)
    targets = [i for s, n in docs for i in range(s + 1, s + n)]
    assert targets == list(range(1, toks.numel()))
    assert docs[0] == (0, 3)  # tokens before the first BOS form their own document


def test_ttt_without_learning_is_document_isolated_direct():
    model, table, toks = toy_model(), toy_table(), toy_tokens(240, seed=3, bos_every=60)
    S, C = 24, 8
    r = eval_ttt(model, toks, table, torch.device("cpu"), rank_r=2, lr=0.0, chunk=C, seq_len=S, batch_docs=3)
    starts = {}
    for ds, n in find_docs(toks, 1):
        for ws, cs, ce in ttt_chunks(n - 1, C, S):
            for t in range(cs, ce):
                starts[ds + t + 1] = ds + ws
    nll, nbytes = direct(model, toks, table, lambda j: starts[j])
    assert r.tokens == toks.numel() - 1
    assert r.bytes == pytest.approx(nbytes, abs=1e-9)
    assert r.nll == pytest.approx(nll, rel=1e-5)


def test_ttt_never_trains_before_scoring():
    model, table, toks = toy_model(), toy_table(), toy_tokens(300, seed=4, bos_every=70)
    trace = []
    r = eval_ttt(model, toks, table, torch.device("cpu"), rank_r=2, lr=0.05, chunk=8, seq_len=24, batch_docs=2,
                 trace=trace)
    scored: set[int] = set()
    order = []
    for kind, doc, lo, hi in trace:
        span = set(range(lo, hi + 1))
        if kind == "score":
            assert not span & scored, "a token was scored twice"
            scored |= span
        else:
            assert span <= scored, f"trained on {lo}..{hi} before scoring it"
        order.append(kind)
    assert scored == set(range(1, toks.numel()))
    assert "train" in order
    base = eval_ttt(model, toks, table, torch.device("cpu"), rank_r=2, lr=0.0, chunk=8, seq_len=24, batch_docs=2)
    assert r.nll != pytest.approx(base.nll, rel=1e-9)  # the adapters did learn
    assert r.tokens == base.tokens and r.bytes == base.bytes
