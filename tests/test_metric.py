"""The byte table and val_bpb against direct computations."""
import lzma
import json
import math

import pytest
import torch

from conftest import SHARED
from pgolf.tokenizer import build_byte_table, load_sentencepiece


def _docs(n):
    p = SHARED / "data" / "text" / "golfbench_val.jsonl.xz"
    if not p.exists():
        pytest.skip("golfbench text not present")
    out = []
    with lzma.open(p, "rt") as f:
        for line in f:
            out.append(json.loads(line)["text"])
            if len(out) >= n:
                break
    return out


def test_byte_table_matches_decoded_text_sp1024(sp1024):
    """On real text: the table's bytes for [BOS] + tokens equal the UTF-8 length of the decoded text.

    The stock sp1024 has no byte-fallback pieces; characters outside it encode to <unk>, which the challenge
    charges 0 bytes. Documents without <unk> must match exactly."""
    table = build_byte_table(sp1024)
    checked = 0
    for text in _docs(150):
        ids = sp1024.encode(text)
        if sp1024.unk_id() in ids:
            continue
        toks = torch.tensor([1] + ids)
        assert table.count(toks[:-1], toks[1:]).sum().item() == len(sp1024.decode(ids).encode("utf-8"))
        checked += 1
    assert checked >= 40


def test_byte_table_rules(sp1024):
    t = build_byte_table(sp1024)
    unk, bos = sp1024.unk_id(), 1
    space = sp1024.piece_to_id("\u2581")
    assert space != unk  # the stock sp1024 has a standalone "▁" piece (challenge issue #897)
    for tid in (0, 1, 2, unk):
        assert t.base_bytes[tid] == 0 and t.is_boundary[tid]
    the = sp1024.piece_to_id("\u2581the")
    # "▁the" after BOS: no space byte; after a normal token: 1 + 3
    assert t.count(torch.tensor([bos]), torch.tensor([the])).item() == 3
    assert t.count(torch.tensor([the]), torch.tensor([the])).item() == 4
    assert t.count(torch.tensor([the]), torch.tensor([bos])).item() == 0  # BOS as target: bits charged, no bytes


def test_byte_fallback_tokens_count_one_byte(embedded_dir):
    sp = load_sentencepiece(embedded_dir / "embedded.model")
    t = build_byte_table(sp)
    assert sum(sp.is_byte(i) for i in range(sp.vocab_size())) == 256
    text = "na\u00efve caf\u00e9 \U0001F600 \u6771\u4eac: \u222b f(x) dx"
    ids = sp.encode(text)
    assert any(sp.is_byte(i) for i in ids)
    toks = torch.tensor([1] + ids)
    assert t.count(toks[:-1], toks[1:]).sum().item() == len(sp.decode(ids).encode("utf-8"))


def test_bpb_formula():
    from pgolf.evaluate import EvalResult

    r = EvalResult(nll=1000.0, tokens=400, bytes=900.0)
    assert r.bpb == pytest.approx(1000.0 / (math.log(2) * 900.0))
    assert r.loss == pytest.approx(2.5)
