"""Every eval mode against a direct computation on toy data; every token scored exactly once."""
import math
import time
from contextlib import nullcontext

import pytest
import torch

from pgolf.config import ModelConfig
from pgolf.dist import cleanup_distributed, exit_process
from pgolf.evaluate import eval_ttt, eval_windows, find_docs, ttt_chunks, ttt_phase_plan, window_plan
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


def test_a_compiled_sliding_eval_sees_one_head_width_and_the_eager_model_takes_the_first_window(monkeypatch):
    """A compiled forward fixes ``last`` in its graph: given ``first_model`` (the eager model, as ``evaluate``
    passes it), the sliding eval sends the block holding the first window (head on every position) there and every
    other block to ``model`` with ``last=stride`` -- one graph -- and scores what the one model scores, bit for bit;
    both models are back in their training modes after."""
    model, table, toks = toy_model(), toy_table(), toy_tokens(300, seed=3)
    cpu = torch.device("cpu")
    seen = {"model": [], "first": []}

    class Spy(torch.nn.Module):  # the model's forward, recording each call's head width under its name
        def __init__(self, name):
            super().__init__()
            self.name = name

        def forward(self, x, y, reduction="mean", last=0):
            seen[self.name].append(last)
            return model(x, y, reduction=reduction, last=last)

    compiled, eager = Spy("model"), Spy("first")
    eager.train()
    got = eval_windows(compiled, toks, table, 32, 8, 4, cpu, first_model=eager)
    assert seen["first"] == [0] and len(seen["model"]) > 1 and set(seen["model"]) == {8}
    assert eager.training and compiled.training
    want = eval_windows(model, toks, table, 32, 8, 4, cpu)
    assert (got.nll, got.tokens, got.bytes) == (want.nll, want.tokens, want.bytes)
    # a run's evaluate hands its eager model to the sliding eval beside the compiled one
    import pgolf.evaluate as E
    from pgolf.config import Config
    firsts = []
    monkeypatch.setattr(E, "eval_windows", lambda *a, **kw: firsts.append(kw.get("first_model")))
    E.evaluate(model, compiled, Config().validate(), toks, table, cpu, ["sliding"])
    assert firsts == [model]


def test_a_compiled_eval_is_warmed_up_on_random_tokens_before_its_timer(monkeypatch):
    """``evaluate`` gives plain and sliding a compiled forward (one that is not the model) with ``warm_up``: one
    forward at the eval's shapes and head width on random tokens, in eval mode, before the timer (in session 20 its
    compile was ~17 s of a 52 s sliding eval, counted and scaled by the challenge prediction as per-token work); the
    global generator untouched, the scores bit for bit those without it, ``seconds`` without its time. The eager
    model (the CPU's evals) is not warmed up."""
    import pgolf.evaluate as E
    from pgolf.config import apply_overrides, Config

    model, table, toks = toy_model(), toy_table(), toy_tokens(300, seed=3)
    cpu = torch.device("cpu")
    calls = []

    class Spy(torch.nn.Module):  # a stand-in for the compiled forward: the model's, recording each call
        def __init__(self):
            super().__init__()
            self.tok_emb = model.tok_emb

        def forward(self, x, y, reduction="mean", last=0):
            calls.append((x.clone(), last, self.training, torch.is_inference_mode_enabled()))
            return model(x, y, reduction=reduction, last=last)

    spy = Spy().train()
    real = E._warm_windows

    ends, progress_t0 = [], []

    def slow_warm_up(*a):  # a warm-up of a known second: the eval's ``seconds`` must not hold it
        took = real(*a)
        time.sleep(1.0)
        ends.append(time.perf_counter())
        return took + 1.0

    class Progress(E.Progress):  # its elapsed and eta lines start after the warm-up too (session 21's first line
        def __init__(self, *a, **kw):  # read "1/972 elapsed 19s eta 18276s" after a 18.7 s warm-up)
            super().__init__(*a, **kw)
            progress_t0.append(self.t0)

    monkeypatch.setattr(E, "_warm_windows", slow_warm_up)
    monkeypatch.setattr(E, "Progress", Progress)
    rng = torch.get_rng_state()
    for stride, batch in ((8, 4), (32, 5)):
        calls.clear()
        got = eval_windows(spy, toks, table, 32, stride, batch, cpu, first_model=model if stride < 32 else None,
                           warm_up=True)
        want = eval_windows(model, toks, table, 32, stride, batch, cpu)
        assert (got.nll, got.tokens, got.bytes) == (want.nll, want.tokens, want.bytes)
        x0, last0, training0, inference0 = calls[0]
        assert x0.shape == (batch, 32) and last0 == stride % 32 and not training0 and inference0
        assert len(calls) > 1 and not any(torch.equal(x0, c[0]) for c in calls[1:])  # random, not a val window
        assert got.warmup_s >= 1.0 and got.seconds < 1.0 and want.warmup_s == 0.0
        assert len(ends) == 1 and progress_t0[-2] >= ends.pop()
    assert torch.equal(torch.get_rng_state(), rng) and spy.training
    cfg = apply_overrides(Config(), ["train.seq_len=32", "eval.sliding_stride=8", "eval.batch_tokens=128",
                                     "eval.sliding_batch_seqs=4", "eval.ttt_chunk=16"]).validate()
    for evm, warmed in ((spy, True), (model, False)):
        out = E.evaluate(model, evm, cfg, toks, table, cpu, ["plain", "sliding"])
        assert all((r.warmup_s > 0) == warmed for r in out.values()), (evm, out)


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


def _perturbed(toks, doc_start, doc_len, t, seed=9):
    """toks with document [doc_start, doc_start + doc_len) changed from its position t on, up to the next
    document's BOS (its last target), with BOS-free ids."""
    out = toks.clone()
    g = torch.Generator().manual_seed(seed)
    out[doc_start + t:doc_start + doc_len - 1] = torch.randint(4, V, (doc_len - 1 - t,), generator=g)
    return out


def _cheating_ttt(model, toks, table, *, rank_r, lr, chunk, seq_len, token_nll, **_):
    """What the rules forbid (challenge #402, #1082): train on each chunk, then score it with the updated adapters."""
    from pgolf.evaluate import TTTAdapters

    for ds, n in find_docs(toks, 1):
        lora = TTTAdapters(model, 1, rank_r)
        opt = torch.optim.Adam(lora.parameters(), lr=lr)
        for ws, cs, ce in ttt_chunks(n - 1, chunk, seq_len):
            x, y = toks[ds + ws:ds + ce][None], toks[ds + ws + 1:ds + ce + 1][None]
            opt.zero_grad()
            model(x, y, reduction="none", lora=lora)[0, cs - ws:].mean().backward()
            opt.step()
            with torch.no_grad():
                nll = model(x, y, reduction="none", lora=lora)[0]
            for p in range(cs - ws, ce - ws):
                token_nll[ds + ws + p + 1] = nll[p].item()


def _unmoved_before_change(ttt, t, **extra):
    """Change the longest document from its position t on; return whether every target before the change kept
    its score bit for bit (and every other document all of its scores), and whether the change was seen at all.
    ``extra``: more settings for the TTT."""
    model, table = toy_model(), toy_table()
    for p in model.parameters():
        p.requires_grad_(False)
    toks = toy_tokens(300, seed=4, bos_every=70)
    ds, n = max(find_docs(toks, 1), key=lambda d: d[1])
    assert n > 40
    kw = dict(rank_r=2, lr=0.05, chunk=8, seq_len=24, batch_docs=2, **extra)
    a, b = {}, {}
    ttt(model, toks, table, torch.device("cpu"), token_nll=a, **kw) if ttt is eval_ttt else \
        ttt(model, toks, table, token_nll=a, **kw)
    moved = _perturbed(toks, ds, n, t)
    ttt(model, moved, table, torch.device("cpu"), token_nll=b, **kw) if ttt is eval_ttt else \
        ttt(model, moved, table, token_nll=b, **kw)
    assert a.keys() == b.keys() == set(range(1, toks.numel()))  # every target scored once
    first_changed = ds + t  # the first target whose token differs
    unmoved = all(b[j] == v for j, v in a.items() if j < first_changed or j >= ds + n)
    return unmoved, any(b[j] != a[j] for j in range(first_changed, ds + n))


@pytest.mark.parametrize("t", [11, 20, 35])  # inside chunks of 8: the chunk holds targets before and after t
def test_ttt_scores_every_token_before_it_can_influence_it(t):
    """Change one document from position t on: every target before t keeps its score bit for bit (no later token
    and no update trained on one reached it), other documents keep all of theirs, and the change is seen from t
    on. The same check catches a TTT that trains on a chunk before scoring it."""
    unmoved, seen = _unmoved_before_change(eval_ttt, t)
    assert unmoved and seen
    unmoved, seen = _unmoved_before_change(eval_ttt, t, short_chunk=3, short_len=100)  # every document short
    assert unmoved and seen
    unmoved, seen = _unmoved_before_change(_cheating_ttt, t)
    assert not unmoved  # the check has teeth: training before scoring moves earlier targets' scores


def test_ttt_short_documents_take_the_short_chunk_and_long_ones_keep_theirs(monkeypatch):
    """eval.ttt_short_chunk (#2014, #2067): a document shorter than ``short_len`` is scored and trained
    ``short_chunk`` tokens at a time -- its batches run the head on windows' last ``short_chunk`` positions, it
    takes more steps and its scores move -- while a longer one is scored as without the switch (its targets'
    NLLs equal up to rounding: its batches hold other documents); the two kinds never share a batch. A short
    chunk equal to the chunk changes nothing."""
    import pgolf.evaluate as E

    model, table, toks = toy_model(), toy_table(), toy_tokens(500, seed=9, bos_every=50)
    cpu = torch.device("cpu")
    docs = find_docs(toks, 1)
    short_len = sorted(n for _, n in docs)[len(docs) // 2]  # about half the documents are short
    kw = dict(rank_r=2, lr=0.05, chunk=8, seq_len=24, batch_docs=3)
    seen = []
    real = E._ttt_forward

    def spy_forward(model, compile_):
        fwd = real(model, compile_)

        def call(x, y, lora, last):
            seen.append(last)
            return fwd(x, y, lora, last)
        return call

    monkeypatch.setattr(E, "_ttt_forward", spy_forward)
    a, b = {}, {}
    off = eval_ttt(model, toks, table, cpu, token_nll=a, **kw)
    assert set(seen) == {8}
    seen.clear()
    on = eval_ttt(model, toks, table, cpu, token_nll=b, short_chunk=3, short_len=short_len, **kw)
    assert set(seen) == {3, 8}
    assert (on.tokens, on.bytes) == (off.tokens, off.bytes) and on.nll != pytest.approx(off.nll, rel=1e-9)
    for ds, n in docs:
        targets = range(ds + 1, ds + n)
        same = all(b[j] == pytest.approx(a[j], rel=1e-9, abs=1e-12) for j in targets)
        assert same == (n >= short_len), (ds, n)
    same_chunk = eval_ttt(model, toks, table, cpu, short_chunk=8, short_len=short_len, **kw)
    assert same_chunk.nll == pytest.approx(off.nll, rel=1e-12, abs=0)
    from pgolf.config import Config, apply_overrides
    with pytest.raises(ValueError, match="eval.ttt_short_chunk=4096 > eval.ttt_seq_len=0"):
        apply_overrides(Config(), ["eval.ttt_short_chunk=4096"]).validate()


def test_ttt_adapts():
    model, table, toks = toy_model(), toy_table(), toy_tokens(300, seed=4, bos_every=70)
    kw = dict(rank_r=2, chunk=8, seq_len=24, batch_docs=2)
    r = eval_ttt(model, toks, table, torch.device("cpu"), lr=0.05, **kw)
    base = eval_ttt(model, toks, table, torch.device("cpu"), lr=0.0, **kw)
    assert r.nll != pytest.approx(base.nll, rel=1e-9)  # the adapters did learn
    assert r.tokens == base.tokens == toks.numel() - 1 and r.bytes == base.bytes


def test_ttt_is_a_function_of_the_documents_not_the_batching():
    """Adapters start from the same seeded state for every document, whatever its batch: the score does not
    move with ttt_batch_docs (it used to, by the rank- and batch-seeded initialisation)."""
    model, table, toks = toy_model(), toy_table(), toy_tokens(400, seed=5, bos_every=45)
    kw = dict(rank_r=2, lr=0.05, chunk=8, seq_len=24)
    ref = eval_ttt(model, toks, table, torch.device("cpu"), batch_docs=1, **kw)
    for bd in (2, 3, 64):
        r = eval_ttt(model, toks, table, torch.device("cpu"), batch_docs=bd, **kw)
        assert r.nll == pytest.approx(ref.nll, rel=1e-12, abs=0) and r.bytes == ref.bytes, bd


def test_ttt_scores_per_document_windows_without_the_document_mask(monkeypatch):
    """TTT's LoRA windows hold one document a row (its BOS at most at position 0, zero padding after), so a model
    with ``model.doc_mask`` scores them through the causal kernels: no mask is built while documents are scored
    (only the phased SGD's stream windows, which cross documents, build one), and the scores equal those with the
    dense mask applied (float64; other kernels, so 1e-12)."""
    import pgolf.evaluate as E
    import pgolf.model as M

    model, table, toks = toy_model(doc_mask=True), toy_table(), toy_tokens(400, seed=7, bos_every=45)
    built = []
    real = M.document_mask
    monkeypatch.setattr(M, "document_mask", lambda *a: built.append(a[0].shape) or real(*a))
    kw = dict(rank_r=2, lr=0.05, chunk=8, seq_len=24, batch_docs=3)
    fast = eval_ttt(model, toks, table, torch.device("cpu"), **kw)
    assert built == [] and not model.one_document_rows
    phased = eval_ttt(model, toks, table, torch.device("cpu"), phases=2, prefix_frac=0.3, sgd_lr=0.01, **kw)
    assert built and not model.one_document_rows  # the SGD's windows cut across documents: masked
    monkeypatch.setattr(E, "_one_document_rows", lambda m: nullcontext())
    built.clear()
    masked = eval_ttt(model, toks, table, torch.device("cpu"), **kw)
    assert built  # the mask really was applied in the comparison run
    assert fast.nll == pytest.approx(masked.nll, rel=1e-12, abs=0) and fast.bytes == masked.bytes
    assert phased.nll == pytest.approx(eval_ttt(model, toks, table, torch.device("cpu"), phases=2, prefix_frac=0.3,
                                                sgd_lr=0.01, **kw).nll, rel=1e-12, abs=0)


def _evals_in_process(rank, world, port, out):
    import os

    torch.set_num_threads(1)
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    model, table, toks = toy_model(smear_gate=True), toy_table(), toy_tokens(700, seed=6, bos_every=60)
    cpu = torch.device("cpu")
    res = [eval_windows(model, toks, table, 32, 32, 3, cpu, by_doc=True),
           eval_windows(model, toks, table, 32, 8, 4, cpu, by_doc=True),
           eval_ttt(model, toks, table, cpu, rank_r=2, lr=0.05, chunk=8, seq_len=24, batch_docs=2),
           eval_ttt(model, toks, table, cpu, rank_r=2, lr=0.05, chunk=8, seq_len=24, batch_docs=2, phases=2,
                    prefix_frac=0.5, sgd_lr=0.05, sgd_batch_seqs=2)]
    if rank == 0:
        torch.save([(r.nll, r.tokens, r.bytes) for r in res] + [r.doc_sums for r in res], out)
    if world > 1:
        cleanup_distributed()
        exit_process(0)  # as the CLI does under torchrun: without it a finished rank aborted in the interpreter's
        # teardown 1 time in ~40-100 on 2 cores (SIGABRT from gloo's threads)


def test_every_mode_gives_the_same_sums_on_one_and_two_processes(tmp_path):
    """Per-unit sums gathered in order and added exactly: plain and sliding bit for bit on 1 and 2 gloo processes
    (the same thread count); TTT too, each document being scored the same way on either. Each document's own sums
    (``doc_sums``) agree too: its targets and bytes exactly, its NLL to rounding (the ranks add their parts)."""
    import socket

    import torch.multiprocessing as mp

    _evals_in_process(0, 1, 0, tmp_path / "one.pt")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_evals_in_process, args=(2, port, tmp_path / "two.pt"), nprocs=2, join=True)
    one, two = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    assert one[0] == two[0] and one[1] == two[1]
    assert one[2][1:] == two[2][1:] and one[2][0] == pytest.approx(two[2][0], rel=1e-12, abs=0)
    assert one[3][1:] == two[3][1:] and one[3][0] == pytest.approx(two[3][0], rel=1e-12, abs=0)  # phased
    assert one[3][0] != pytest.approx(one[2][0], rel=1e-9)  # the phases' SGD changed the scores
    for a, b in zip(one[4:], two[4:]):
        assert len(a) == len(b) == len(find_docs(toy_tokens(700, seed=6, bos_every=60), 1))
        assert [x[1:] for x in a] == [x[1:] for x in b]
        assert [x[0] for x in a] == pytest.approx([x[0] for x in b], rel=1e-12, abs=0)


@pytest.mark.parametrize("n_docs,phases,frac", [(10, 0, 0.05), (10, 3, 0.05), (10, 3, 0.6), (50, 3, 0.05),
                                                (7, 3, 1.0), (0, 2, 0.5)])
def test_phase_plan_scores_each_document_once_and_trains_only_on_scored_ones(n_docs, phases, frac):
    plan = ttt_phase_plan(n_docs, phases, frac)
    scored = [i for a, b, _ in plan for i in range(a, b)]
    assert scored == list(range(n_docs))  # each document once, in stream order
    done = 0
    for a, b, sgd_end in plan:
        done = b
        assert sgd_end <= done  # the SGD after a group reads only documents scored by then
    assert sum(1 for *_, e in plan if e) == (min(phases, n_docs) if phases else 0)


def capped_model():
    """The toy with logits that the softcap bends (std ~1, up to ~6 against a cap of 2): the toy's own are ~0
    (uniform predictions), where caps of any size score the same and the SGD leaves them where they start."""
    m = toy_model(logit_softcap=2.0)
    with torch.no_grad():
        m.tok_emb.weight.mul_(30)
    return m


PHASED = dict(rank_r=2, lr=0.05, chunk=8, seq_len=24, batch_docs=2, phases=2, prefix_frac=0.5, sgd_lr=0.05,
              sgd_batch_seqs=2)


def _phased_run(toks, make=toy_model, **over):
    model, table = make(), toy_table()
    for p in model.parameters():
        p.requires_grad_(False)
    before = [p.detach().clone() for p in model.parameters()]
    rec = {}
    r = eval_ttt(model, toks, table, torch.device("cpu"), token_nll=rec, **dict(PHASED, **over))
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # base weights restored
    return r, rec


@pytest.mark.parametrize("cheat,asym", [(False, False), (True, False), (False, True), (True, True)])
def test_phased_ttt_scores_every_token_before_any_update_that_read_it(cheat, asym, monkeypatch):
    """Phased TTT: change a document of the second phase from its position t on. Every target before it in the
    stream keeps its score bit for bit; later documents may move (the SGD after phase 2 read the change -- and
    does: the change is seen beyond the document). A plan whose SGD reads the next phase's documents before they
    are scored moves the scores before t: the check catches it. The same with the softcap's two caps learned by
    the SGD (``asym_softcap``)."""
    import pgolf.evaluate as E

    if cheat:
        real = E.ttt_phase_plan

        def ahead(n_docs, phases, prefix_frac):  # the SGD after group k reads group k+1 too: not yet scored
            plan = real(n_docs, phases, prefix_frac)
            return [(a, b, plan[i + 1][1] if e and i + 1 < len(plan) else e) for i, (a, b, e) in enumerate(plan)]

        monkeypatch.setattr(E, "ttt_phase_plan", ahead)
    toks = toy_tokens(600, seed=7, bos_every=60)
    docs = find_docs(toks, 1)
    plan = E.ttt_phase_plan(len(docs), PHASED["phases"], PHASED["prefix_frac"])
    assert len(plan) == 3 and plan[1][2] > 0
    ds, n = max(docs[plan[1][0]:plan[1][1]], key=lambda d: d[1])  # the longest document of the second phase
    t = n // 2  # inside a chunk of 8 that the document's own LoRA also trains on
    assert n > 16
    kw = dict(asym_softcap=True, make=capped_model) if asym else {}
    r, a = _phased_run(toks, **kw)
    _, b = _phased_run(_perturbed(toks, ds, n, t), **kw)
    assert a.keys() == b.keys() == set(range(1, toks.numel())) and r.tokens == toks.numel() - 1
    before = [j for j in a if j < ds + t]
    moved_before = [j for j in before if a[j] != b[j]]
    if cheat:
        assert moved_before  # the check has teeth
        return
    assert not moved_before
    assert any(a[j] != b[j] for j in range(ds + n, toks.numel()))  # later phases saw the change through the SGD


def test_phased_ttt_with_zero_sgd_lr_is_plain_lora_ttt():
    toks = toy_tokens(400, seed=5, bos_every=45)
    r0, _ = _phased_run(toks, sgd_lr=0.0, sgd_momentum=0.0)
    r1, _ = _phased_run(toks, phases=0)
    assert (r0.nll, r0.tokens, r0.bytes) == (r1.nll, r1.tokens, r1.bytes)
    r2, _ = _phased_run(toks)
    assert r2.nll != r1.nll and r2.serial_s > 0 and r1.serial_s == 0
    r3, _ = _phased_run(toks, sgd_lr=0.0, sgd_momentum=0.0, asym_softcap=True)  # both caps at the softcap: the same
    assert (r3.nll, r3.tokens, r3.bytes) == (r1.nll, r1.tokens, r1.bytes)
    r4, _ = _phased_run(toks, capped_model, sgd_lr=0.0, sgd_momentum=0.0, asym_softcap=True)  # also where they bite
    r5, _ = _phased_run(toks, capped_model, phases=0)
    assert (r4.nll, r4.tokens, r4.bytes) == (r5.nll, r5.tokens, r5.bytes) and r5.nll != r1.nll


def test_asym_softcap_caps_are_trained_by_the_phases_sgd_and_leave_with_the_eval(monkeypatch):
    """``eval.ttt_asym_softcap`` (#1923): the logit softcap's positive and negative sides get caps of their own
    (both model.logit_softcap at first), which only the phases' global SGD trains; each phase moves them, apart
    from each other, and the scores with them; after the eval the model has no caps and the same state dict.
    Without phases the config refuses the switch."""
    import pgolf.evaluate as E
    from pgolf.config import Config, apply_overrides

    caps, real = [], E._global_sgd

    def spy(model, *a, **kw):
        def record():
            if model.softcap_caps is not None:
                caps.append(model.softcap_caps.detach().clone())
        record()
        out = real(model, *a, **kw)
        record()
        return out

    monkeypatch.setattr(E, "_global_sgd", spy)
    toks = toy_tokens(400, seed=5, bos_every=45)
    model = capped_model()
    keys = list(model.state_dict())
    r_asym, _ = _phased_run(toks, capped_model, asym_softcap=True)
    assert len(caps) == 2 * PHASED["phases"]
    c = model.cfg.logit_softcap
    assert caps[0].tolist() == [c, c]
    assert all(not torch.equal(x, y) for x, y in zip(caps[::2], caps[1::2]))  # every phase trained them
    assert caps[-1][0] != caps[-1][1]  # apart: the two sides learn different caps
    caps.clear()
    r_sym, _ = _phased_run(toks, capped_model)
    assert caps == []  # none without the switch
    assert r_asym.nll != r_sym.nll and (r_asym.tokens, r_asym.bytes) == (r_sym.tokens, r_sym.bytes)
    eval_ttt(model, toks, toy_table(), torch.device("cpu"), **dict(PHASED, asym_softcap=True))
    assert model.softcap_caps is None and list(model.state_dict()) == keys
    with pytest.raises(ValueError, match="ttt_asym_softcap needs eval.ttt_phases"):
        apply_overrides(Config(), ["eval.ttt_asym_softcap=true"]).validate()


def test_challenge_eval_prediction_scales_by_text_and_does_not_divide_repeated_work():
    """The prediction scales by the bytes of text scored, not by tokens (an sp8192 val set holds 30% fewer tokens
    for the same text: a token ratio overstated its TTT time by half), and does not divide repeated work; a mode
    predicted past the eval budget says so on its line."""
    from pgolf.evaluate import CHALLENGE_VAL_BYTES, challenge_eval_note, predicted_challenge_eval_s

    n = CHALLENGE_VAL_BYTES / 10
    assert predicted_challenge_eval_s(8.0, n, world=1) == pytest.approx(10.0)
    assert predicted_challenge_eval_s(8.0, n, world=1, serial_s=4.0) == pytest.approx(5.0 + 40.0)
    assert predicted_challenge_eval_s(8.0, n, world=2) == pytest.approx(20.0)
    # the eval line flags a mode that alone would pass the challenge's 600 s
    assert challenge_eval_note(predicted_challenge_eval_s(8.0, n)).endswith("like these: 10s)")
    assert challenge_eval_note(predicted_challenge_eval_s(432.0, n)).endswith("like these: 540s)")
    near = "within 10% of the 600 s eval budget: time it on the challenge's GPUs)"
    assert challenge_eval_note(predicted_challenge_eval_s(432.8, n)).endswith("541s, " + near)
    assert challenge_eval_note(predicted_challenge_eval_s(480.0, n)).endswith("600s, " + near)
    assert challenge_eval_note(predicted_challenge_eval_s(481.0, n)).endswith("601s, over the 600 s eval budget)")


def test_ttt_optimizer_is_adams_steps_without_decay_and_decays_with_it(monkeypatch):
    """The adapters' AdamW with wd 0 takes Adam's steps bit for bit (the scores before the switch existed), with
    the records' settings (beta1 0, wd 0.5) other scores; the config's betas and decay reach the eval."""
    import pgolf.evaluate as E
    from pgolf.config import Config

    model, table, toks = toy_model(), toy_table(), toy_tokens(300, seed=4, bos_every=70)
    kw = dict(rank_r=2, lr=0.05, chunk=8, seq_len=24, batch_docs=2)
    new = eval_ttt(model, toks, table, torch.device("cpu"), **kw)
    adam = lambda params, lr, betas=(0.9, 0.95), wd=0.0: torch.optim.Adam(params, lr=lr, betas=betas, eps=1e-10)
    with monkeypatch.context() as m:
        m.setattr(E, "ttt_optimizer", adam)
        old = eval_ttt(model, toks, table, torch.device("cpu"), **kw)
    assert new.nll == old.nll
    decayed = eval_ttt(model, toks, table, torch.device("cpu"), wd=0.5, **kw)
    beta0 = eval_ttt(model, toks, table, torch.device("cpu"), betas=(0.0, 0.99), **kw)
    assert decayed.nll != new.nll and beta0.nll != new.nll
    cfg = Config()
    cfg.eval.ttt_beta1, cfg.eval.ttt_beta2, cfg.eval.ttt_wd = 0.0, 0.99, 0.5
    got = E.ttt_kwargs(cfg.validate())
    assert got["betas"] == (0.0, 0.99) and got["wd"] == 0.5
    cfg.eval.ttt_beta1 = 1.0
    with pytest.raises(Exception, match="eval.ttt_beta1"):
        cfg.validate()


ALL_TARGETS = ("q", "k", "v", "o", "mlp", "head")


def test_ttt_adapters_on_every_target_start_at_the_model_and_all_learn():
    """eval.ttt_targets: fresh adapters (B = 0) on every target leave the scores bit for bit the model's, scaled
    (alpha) or not, on a parallel-block model and a two-lane one too; one backward reaches each target's every
    adapter."""
    from pgolf.evaluate import TTTAdapters

    for kw in ({}, {"parallel_from": 1}, {"parallel_from": 1, "parallel_lanes": 2}):
        model = toy_model(**kw)
        x = toy_tokens(40, seed=2)[None]
        y = torch.roll(x, -1, 1)
        base = model(x, y, reduction="none")
        for alpha in (0.0, 144.0):
            lora = TTTAdapters(model, 1, 2, targets=ALL_TARGETS, alpha=alpha).double()
            assert torch.equal(model(x, y, reduction="none", lora=lora), base)
        model(x, y, lora=lora).backward()
        for t, mods in lora.adapters.items():
            assert len(mods) == (1 if t == "head" else 2)
            assert all(m.B.grad is not None and m.B.grad.abs().sum() > 0 for m in mods), t


@pytest.mark.parametrize("t", [11, 35])
def test_ttt_on_every_target_with_the_records_optimizer_scores_before_it_learns(t):
    """The perturbation check with adapters on every target, alpha 144, AdamW beta1 0 and decay 0.5 (the frontier
    records' TTT): no target's score moves with a later token, the change is seen, and the scores differ from the
    default adapters' (the targets are used)."""
    extra = dict(targets=ALL_TARGETS, alpha=144.0, betas=(0.0, 0.99), wd=0.5)
    unmoved, seen = _unmoved_before_change(eval_ttt, t, **extra)
    assert unmoved and seen
    model, table, toks = toy_model(), toy_table(), toy_tokens(300, seed=4, bos_every=70)
    kw = dict(rank_r=2, lr=0.05, chunk=8, seq_len=24, batch_docs=2)
    assert eval_ttt(model, toks, table, torch.device("cpu"), **kw, **extra).nll != \
        eval_ttt(model, toks, table, torch.device("cpu"), **kw).nll


def test_warm_a_carries_each_rows_adapters_to_its_next_document_and_stays_score_first():
    """eval.ttt_warm_a (#1767, the records' default): each adapter row keeps its A from one document to the next
    (B restarts at zero). A document's tail changed: every score of the batches before it, of its batch-mate and
    of its own head stays bit for bit (score-first), while a document adapted later in its row moves (it learnt
    from the changed document); without warm A nothing outside the document moves, and warm A changes the score."""
    model, table, toks = toy_model(), toy_table(), toy_tokens(300, seed=4, bos_every=70)
    cpu = torch.device("cpu")
    kw = dict(rank_r=2, lr=0.05, chunk=8, seq_len=24, batch_docs=2)
    assert eval_ttt(model, toks, table, cpu, warm_a=True, **kw).nll != eval_ttt(model, toks, table, cpu, **kw).nll
    docs = find_docs(toks, 1)
    order = sorted(range(len(docs)), key=lambda i: docs[i][1])  # one process, no phases: shortest first
    d = order[8]  # the first row of the fifth batch of two
    ds, n = docs[d]
    t = 12
    assert n > t + 2
    targets = lambda i: range(docs[i][0] + 1, docs[i][0] + docs[i][1])  # noqa: E731
    for warm in (False, True):
        a, b = {}, {}
        eval_ttt(model, toks, table, cpu, warm_a=warm, token_nll=a, **kw)
        eval_ttt(model, _perturbed(toks, ds, n, t), table, cpu, warm_a=warm, token_nll=b, **kw)
        fixed = [j for i in order[:10] if i != d for j in targets(i)] + list(range(ds + 1, ds + t))
        assert all(b[j] == a[j] for j in fixed)  # earlier batches, the batch-mate, the document's head
        later = [j for i in order[10:] for j in targets(i)]
        assert any(b[j] != a[j] for j in later) == warm


def test_ttt_runs_the_head_only_on_the_positions_a_window_scores(monkeypatch):
    """Every scored and trained target of a TTT window lies in its last min(chunk, W) positions, so the head and
    the loss run on those alone (a 2,048-token window at 48-token chunks: 43x fewer logits); the scores are the
    direct computation's (test above) and every target is scored once."""
    model, table, toks = toy_model(), toy_table(), toy_tokens(300, seed=4, bos_every=70)
    seen = []
    forward = type(model).forward

    def spy(self, ids, targets, reduction="mean", lora=None, last=0):
        seen.append((ids.size(1), last))
        return forward(self, ids, targets, reduction, lora, last)

    monkeypatch.setattr(type(model), "forward", spy)
    nll = {}
    r = eval_ttt(model, toks, table, torch.device("cpu"), rank_r=2, lr=0.05, chunk=8, seq_len=24, batch_docs=2,
                 token_nll=nll)
    assert seen and all(last == min(8, w) for w, last in seen) and max(w for w, _ in seen) == 24
    assert r.tokens == toks.numel() - 1 and sorted(nll) == list(range(1, toks.numel()))


def test_compiled_ttt_scores_as_the_eager_one_and_before_it_learns():
    """eval.ttt_compile: TTT's forward compiled with dynamic shapes (one graph for every window width and batch),
    warmed up on random tokens, scores what the eager forward scores (the compiled kernels may round differently:
    1e-9), adapts, and passes the perturbation check on the compiled path itself: no target's score moves with a
    later token (bit for bit), and the change is seen. One graph serves every call: the warm-up compiles it, and
    no later batch -- the first chunk (window and head widths equal: a view there would be contiguous, and a guard
    on it once made a second graph), a document's last chunk (no update), a batch of one document (phases of one
    document each), a batch of fewer documents than adapter rows, another width -- compiles more."""
    from torch._dynamo.utils import counters

    model, table, toks = toy_model(), toy_table(), toy_tokens(300, seed=4, bos_every=70)
    cpu = torch.device("cpu")
    kw = dict(rank_r=2, lr=0.01, chunk=8, seq_len=24, batch_docs=3)  # 14 documents: the last batch has 2 of 3 rows
    logged = []
    graphs = counters["stats"]["unique_graphs"]
    compiled = eval_ttt(model, toks, table, cpu, compile_=True, log=logged.append, **kw)
    assert any("compile warm-up on random tokens" in line for line in logged)
    assert counters["stats"]["unique_graphs"] - graphs == 1
    phased = dict(phases=4, prefix_frac=0.3, sgd_lr=0.05)  # phases of one document each: batches of one
    compiled_phased = eval_ttt(model, toks, table, cpu, compile_=True, **phased, **kw)
    assert counters["stats"]["unique_graphs"] - graphs == 1
    # the graphs read the weights the phases' SGD changed (not constants captured at compile time)
    assert compiled_phased.nll == pytest.approx(eval_ttt(model, toks, table, cpu, **phased, **kw).nll, rel=1e-9,
                                                abs=0)
    eager = eval_ttt(model, toks, table, cpu, **kw)
    assert compiled.nll == pytest.approx(eager.nll, rel=1e-9, abs=0) and compiled.bytes == eager.bytes
    # warm A: the warm-up's random tokens leave no trace in the adapters' A either
    assert eval_ttt(model, toks, table, cpu, compile_=True, warm_a=True, **kw).nll == \
        pytest.approx(eval_ttt(model, toks, table, cpu, warm_a=True, **kw).nll, rel=1e-9, abs=0)
    assert compiled.tokens == eager.tokens == toks.numel() - 1
    assert compiled.warmup_s > 0 and eager.warmup_s == 0  # the warm-up is reported, outside ``seconds``
    assert eager.nll != pytest.approx(eval_ttt(model, toks, table, cpu, **dict(kw, lr=0.0)).nll, rel=1e-9)
    ds, n = max(find_docs(toks, 1), key=lambda d: d[1])
    a, b = {}, {}
    eval_ttt(model, toks, table, cpu, compile_=True, token_nll=a, **kw)
    eval_ttt(model, _perturbed(toks, ds, n, 20), table, cpu, compile_=True, token_nll=b, **kw)
    assert a.keys() == b.keys() == set(range(1, toks.numel()))
    assert all(b[j] == v for j, v in a.items() if j < ds + 20 or j >= ds + n)
    assert any(b[j] != a[j] for j in range(ds + 20, ds + n))


def test_compiled_ttt_with_short_chunks_builds_its_graphs_before_the_timer(monkeypatch):
    """With ``short_chunk`` the compiled forward meets a third width (a short document's chunk): no graph is
    built inside the eval's timer, and the scores are the eager ones (rounding only: 1e-9). On the CPU the dynamic
    graph already serves that width; the warm-up runs it too, for a backend that would specialise on it."""
    from torch._dynamo.utils import counters
    import pgolf.evaluate as E

    model, table, toks = toy_model(), toy_table(), toy_tokens(300, seed=4, bos_every=70)
    cpu = torch.device("cpu")
    after_warm_up, real = [], E._warm_up

    def spy(*a, **kw):
        took = real(*a, **kw)
        after_warm_up.append(counters["stats"]["unique_graphs"])
        return took

    monkeypatch.setattr(E, "_warm_up", spy)
    kw = dict(rank_r=2, lr=0.01, chunk=8, seq_len=24, batch_docs=3, short_chunk=3, short_len=20)  # 7 of 14 short
    compiled = eval_ttt(model, toks, table, cpu, compile_=True, **kw)
    assert after_warm_up == [counters["stats"]["unique_graphs"]]
    assert compiled.nll == pytest.approx(eval_ttt(model, toks, table, cpu, **kw).nll, rel=1e-9, abs=0)


def test_compiled_ttt_reads_the_asym_caps_the_phases_train():
    """The compiled TTT forward with ``asym_softcap``: the caps are inputs of its graph, not constants captured at
    compile time, so its scores follow the phases' SGD as the eager forward's do (rounding only: 1e-9)."""
    model, table, toks = capped_model(), toy_table(), toy_tokens(300, seed=4, bos_every=70)
    cpu = torch.device("cpu")
    kw = dict(rank_r=2, lr=0.01, chunk=8, seq_len=24, batch_docs=3, phases=2, prefix_frac=0.5, sgd_lr=0.05)
    compiled = eval_ttt(model, toks, table, cpu, compile_=True, asym_softcap=True, **kw)
    assert compiled.nll == pytest.approx(eval_ttt(model, toks, table, cpu, asym_softcap=True, **kw).nll, rel=1e-9,
                                         abs=0)
    assert compiled.nll != pytest.approx(eval_ttt(model, toks, table, cpu, **kw).nll, rel=1e-9)
    assert model.softcap_caps is None


def test_the_perturbation_check_lets_later_documents_move_only_where_ttt_carries_state_across_them():
    """pgolf.legality.check_score_before_update, as the audit runs it: under warm A a later document of the changed
    document's row may move (it adapted from an A that saw the change, after scoring it), so the strict form --
    every other document bit for bit -- fails there and passes without warm A; the audit's form for warm A and
    phases (``later_docs_fixed=False``) still holds every earlier target fixed."""
    from pgolf.legality import check_score_before_update

    model, table, toks = toy_model(), toy_table(), toy_tokens(300, seed=4)
    toks[toks == 1] = 5
    toks[::60] = 1  # five documents of 60 tokens: the changed one (the first longest) has two later in its row
    kw = dict(rank_r=2, lr=0.05, chunk=8, seq_len=24, batch_docs=2)
    assert check_score_before_update(eval_ttt, model, toks, table, 1, kw).ok
    warm = dict(kw, warm_a=True)
    strict = check_score_before_update(eval_ttt, model, toks, table, 1, warm)
    assert not strict.ok and "in another document" in strict.detail
    assert check_score_before_update(eval_ttt, model, toks, table, 1, warm, later_docs_fixed=False).ok


def test_every_mode_splits_its_score_into_the_documents_sums():
    """``doc_sums`` (windowed modes with ``by_doc``; TTT always): per document of ``find_docs``, the NLL, targets
    and bytes of its own targets, each as the direct float64 computation gives them, adding up to the score; the
    score itself does not move with ``by_doc``."""
    model, table, toks = toy_model(), toy_table(), toy_tokens(240, seed=3, bos_every=60)
    toks[0] = 5  # tokens before the first BOS: a document of their own
    docs = find_docs(toks, 1)
    cpu = torch.device("cpu")

    def per_doc(context_start):  # the direct sums of each document's targets
        out = []
        for s, n in docs:
            sub = toks[:s + n]
            nll = nbytes = 0.0
            with torch.no_grad():
                for j in range(s + 1, s + n):
                    logits = model.logits(sub[context_start(j):j][None])[0, -1].double()
                    nll += (torch.logsumexp(logits, 0) - logits[sub[j]]).item()
                    nbytes += table.count(sub[j - 1:j], sub[j:j + 1]).item()
            out.append((nll, n - 1, nbytes))
        return out

    L, stride, S, C = 32, 8, 24, 8
    ttt_start = {ds + t + 1: ds + ws for ds, n in docs for ws, cs, ce in ttt_chunks(n - 1, C, S)
                 for t in range(cs, ce)}
    runs = [(eval_windows(model, toks, table, L, L, 3, cpu, by_doc=True),
             eval_windows(model, toks, table, L, L, 3, cpu),
             lambda j: ((j - 1) // L) * L),
            (eval_windows(model, toks, table, L, stride, 3, cpu, by_doc=True),
             eval_windows(model, toks, table, L, stride, 3, cpu),
             lambda j: max(0, math.ceil((j - L) / stride) * stride)),
            (eval_ttt(model, toks, table, cpu, rank_r=2, lr=0.0, chunk=C, seq_len=S, batch_docs=3), None,
             ttt_start.__getitem__)]
    for r, plain, start in runs:
        assert len(r.doc_sums) == len(docs) >= 5
        for (nll, n, nb), (want_nll, want_n, want_nb) in zip(r.doc_sums, per_doc(start)):
            assert n == want_n and nb == pytest.approx(want_nb, abs=1e-9) and nll == pytest.approx(want_nll, rel=1e-5)
        assert sum(n for _, n, _ in r.doc_sums) == r.tokens and math.fsum(b for *_, b in r.doc_sums) == r.bytes
        assert math.fsum(x for x, *_ in r.doc_sums) == pytest.approx(r.nll, rel=1e-12)
        if plain is not None:
            assert plain.doc_sums is None and (plain.nll, plain.tokens, plain.bytes) == (r.nll, r.tokens, r.bytes)
