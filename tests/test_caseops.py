"""CaseOps: the case transform is bijective, the byte sidecar holds the original text's bytes, and every eval mode
divides by them."""

import json
import math
import random
import shutil
import sys

import numpy as np
import pytest
import torch

from conftest import data_cli, run_cli, tiny_overrides
from pgolf import caseops, datasets
from pgolf.caseops import ALLCAPS, CAPNEXT, ESC, TITLE
from pgolf.config import InputError, ModelConfig, apply_overrides
from pgolf.data import prepare_data, read_header, read_shard, sidecar_path, write_shard
from pgolf.evaluate import eval_ttt, eval_windows, find_docs, ttt_chunks
from pgolf.model import GPT
from pgolf.recipes import get_recipe
from pgolf.tokenizer import build_byte_table, load_sentencepiece, target_bytes

# ---------------------------------------------------------------------------------------------------------------
# the transform

# case oddities: no one-to-one partner (ß, İ, final ς, titlecase ǅ, the Kelvin and Ohm signs), partners of other
# UTF-8 lengths (Ɐ/ɐ), astral letters (𐐀), the operators themselves and their private-use neighbours
ODD = ["ß", "ẞ", "İ", "ı", "ΟΔΟΣ", "ς", "σ", "Σ", "ǅ", "Ǆ", "ǆ", "\u212a", "\u2126", "ﬁ", "Ɐ", "ɐ", "ſ", "ῼ", "Ꭰ", "ꭰ",
       "𐐀", "𐐨", "Ⓐ", "ⓐ", "Ａ", "ａ", "ǰ", "ŉ", "ΐ", "ⅷ", "Ⅷ", TITLE, ALLCAPS, CAPNEXT, ESC, "\ue004", "\uf8ff"]
PIECES = ODD + ["a", "b", "z", "A", "B", "Z", "É", "é", "Ж", "ж", "7", "42", " ", "  ", "\n", "\t", "-", "'", ".",
                "NASA", "Hello", "iPhone", "OpenAI", "日本", "\u200b", "\u00a0"]


@pytest.mark.parametrize("text,want", [
    ("The NASA Launch", f"{TITLE}the{ALLCAPS} nasa{TITLE} launch"),
    ("iPhone OpenAI", f"i{CAPNEXT}phone{TITLE} open{ALLCAPS}ai"),
    ("NASAs", f"{ALLCAPS}nas{CAPNEXT}as"),  # ALLCAPS stops before a letter that has an upper case
    ("ABc", f"{TITLE}a{CAPNEXT}bc"),
    ("ΟΔΟΣ οδος", f"{ALLCAPS}οδοσ οδος"),  # per-character lower case: no final sigma made up
    ("Straße İ ẞ", f"{TITLE}straße İ ẞ"),  # no one-to-one case partner: as they are
    (f"a{TITLE}b{ESC}", f"a{ESC}{TITLE}b{ESC}{ESC}"),  # the operators themselves, escaped
    ("x\n\nYes", f"x\n{TITLE}\nyes"),  # the operator before the one whitespace character in front of the word
    ("", ""),
])
def test_examples(text, want):
    t, b = caseops.encode_with_bytes(text)
    assert t == want
    assert caseops.decode(t) == text
    assert int(b.sum()) == len(text.encode("utf-8"))


def test_roundtrip_random_text():
    rng = random.Random(0)
    changed = 0
    for _ in range(3000):
        s = "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 30)))
        t, b = caseops.encode_with_bytes(s)
        assert caseops.decode(t) == s, (s, t)
        assert b.shape == (len(t),) and int(b.sum()) == len(s.encode("utf-8"))
        assert not any(c.isupper() and c.lower().upper() == c and len(c.lower()) == 1 and c.lower() != c
                       for c in t), t  # every transformable capital left the lexical stream
        changed += t != s
    assert changed > 2000


def test_roundtrip_every_code_point():
    """Every code point, alone in a long run and between letters, spaces and capitals."""
    chars = [chr(i) for i in range(sys.maxunicode + 1) if not 0xD800 <= i < 0xE000]
    for sep in ("", "a", " ", "A", "AB", " Q"):
        s = sep.join(chars)
        t, b = caseops.encode_with_bytes(s)
        assert caseops.decode(t) == s
        assert int(b.sum()) == len(s.encode("utf-8"))


def test_decode_refuses_what_encode_cannot_write():
    with pytest.raises(ValueError):
        caseops.decode(TITLE + "1")
    with pytest.raises(ValueError):
        caseops.decode("x" + ESC)
    assert caseops.decode(TITLE + "1" + ESC, strict=False) == "1"


def test_token_bytes_charges_every_character_once():
    cb = np.array([0, 1, 1, 1, 2, 1, 1, 3], dtype=np.int64)
    # token spans: char 0 dropped (before the first token), char 4 dropped (goes to the token before), an empty span
    spans = [(1, 4), (5, 5), (5, 6), (6, 8)]
    assert caseops.token_bytes(cb, spans).tolist() == [0 + 3 + 2, 0, 1, 4]
    # a dropped leading space and one after an operator go to a token with bytes of its own, not the operator's
    cb = np.array([1, 0, 1, 1, 1, 0, 1, 1], dtype=np.int64)  # " ^ab ^ c" (^: an operator, 0 bytes)
    spans = [(1, 2), (2, 4), (5, 6), (7, 8)]
    assert caseops.token_bytes(cb, spans).tolist() == [0, 1 + 2 + 1 + 1, 0, 1]
    assert caseops.token_bytes(np.array([1, 0]), [(1, 2)]).tolist() == [1]  # no token with bytes: the first
    assert caseops.token_bytes(cb, []).size == 0


# ---------------------------------------------------------------------------------------------------------------
# a CaseOps build

WORDS = ("the a of to and in is was for on with as by at from that this it be are have not river city music garden "
         "naïve über straße façade ɐlpha").split()


def make_docs(n: int, seed: int) -> list[str]:
    """Documents with every kind of capital, letters whose capitals are longer in UTF-8 ('ɐ' 2 bytes, 'Ɐ' 3),
    literal operator characters and whitespace that normalisation collapses."""
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        words = []
        for _ in range(rng.randint(3, 40)):
            w = rng.choice(WORDS)
            r = rng.random()
            w = w.title() if r < 0.25 else w.upper() if r < 0.35 else w[:1] + w[1:].capitalize() if r < 0.4 else w
            words.append(w)
        words.insert(rng.randrange(len(words)), str(rng.randint(0, 10**4)))
        text = " ".join(words)
        if i % 5 == 1:
            text = text.replace(" ", "  ", 2) + "\n\n" + "Next PARAGRAPH " + TITLE + " here"
        if i % 7 == 3:
            text = "  " + text + " 日本語 ΟΔΟΣ  "
        docs.append(text)
    return docs


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(folder, tokenizer, val docs): a caseops tokenizer and build through the command line."""
    root = tmp_path_factory.mktemp("caseops")
    docs = make_docs(160, seed=1)
    src = root / "docs.jsonl"
    src.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
    assert data_cli(["tokenizer", "--caseops", "--input", str(src), "--vocab", "400", "--out", str(root / "tok")]) == 0
    tok = root / "tok.model"
    out = root / "data"
    assert data_cli(["build", "--caseops", "--input", str(src), "--val-docs", "6", "--tokenizer", str(tok), "--out",
                str(out), "--shard-tokens", "150", "--workers", "2"]) == 0
    return out, tok, docs[:6]


def test_build_writes_sidecars_of_the_original_bytes(built):
    out, tok, val_docs = built
    sp = load_sentencepiece(tok)
    assert [sp.piece_to_id(o) for o in caseops.OPERATORS] == [4, 5, 6, 7]
    shards = sorted(out.glob("fineweb_val_[0-9]*.bin"))
    assert len(shards) > 1  # documents straddle shards, and so do their sidecars
    sides = [sidecar_path(f) for f in shards]
    assert [read_header(p) for p in sides] == [read_header(f) for f in shards]
    stream = np.concatenate([read_shard(f) for f in shards]).astype(np.int64)
    side = np.concatenate([read_shard(p) for p in sides]).astype(np.int64)
    original = [len(d.encode("utf-8")) for d in val_docs]
    bos = np.flatnonzero(stream == sp.bos_id())
    assert bos.size == len(val_docs) and bos[0] == 0  # one BOS per document, and it carries no bytes
    assert not side[bos].any()
    per_doc = [int(side[a:b].sum()) for a, b in zip(bos, list(bos[1:]) + [stream.size])]
    assert per_doc == original
    assert int(side.sum()) == sum(original)
    ops = np.isin(stream, [4, 5, 6])  # TITLE, ALLCAPS, CAPNEXT; literal ones in the text are escaped, 3 bytes each
    literal = sum(d.count(o) for d in val_docs for o in (TITLE, ALLCAPS, CAPNEXT))
    assert int(side[ops].sum()) == 3 * literal and int((side[ops] > 0).sum()) == literal
    # what the byte table of the transformed tokens would give instead (operators count 3 bytes, ...): not this
    table = int(target_bytes(build_byte_table(sp), torch.from_numpy(stream)).sum())
    assert table != sum(original)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["transform"] == caseops.NAME and manifest["splits"]["val"]["sidecar_bytes"] == sum(original)
    assert manifest["splits"]["val"]["text_bytes"] == sum(original)
    assert [d["file"] for d in manifest["byte_sidecar"]["files"]] == [p.name for p in sides]
    assert "sidecars" not in manifest["splits"]["train"] and not list(out.glob("fineweb_train_bytes_*"))
    # the documents come back (those that NFKC and whitespace collapsing leave alone)
    decoded = datasets.decode_shards(shards, sp)
    plain = [i for i, d in enumerate(val_docs) if "  " not in d and "\n" not in d and not d.startswith(" ")]
    assert plain and all(decoded[i] == val_docs[i] for i in plain)


def test_build_refuses_a_tokenizer_of_the_other_kind(built, tmp_path):
    out, tok, _ = built
    src = tmp_path / "d.txt"
    src.write_text("Some Text\nMore Text\n")
    with pytest.raises(InputError, match="CaseOps tokenizer"):
        datasets.build_shards(src, tok, tmp_path / "o", val_docs=1, workers=1, progress=False)


def _cfg(folder, tok, **over):
    return apply_overrides(get_recipe("smoke"), tiny_overrides(**over) + [
        f"data.path={folder}", f"data.tokenizer={tok}", "model.vocab_size=0", "eval.max_tokens=0"])


def test_prepare_data_takes_the_sidecar(built):
    out, tok, val_docs = built
    ds = prepare_data(_cfg(out, tok), lambda *a: None)
    assert "sidecar" in ds.byte_source
    assert int(ds.val_bytes.sum()) == sum(len(d.encode("utf-8")) for d in val_docs)
    assert ds.val_bytes.shape == ds.val_tokens.shape


def _tiny_model(vocab):
    torch.manual_seed(0)
    m = GPT(ModelConfig(vocab_size=vocab, num_layers=2, model_dim=32, num_heads=4, num_kv_heads=2)).double()
    with torch.no_grad():
        for p in m.parameters():
            if p.ndim == 2 and p.abs().sum() == 0:
                p.normal_(0, 0.05)
    return m.eval()


def _direct_nll(model, toks, context_start) -> float:
    """Σ NLL in float64, one forward per target j with context toks[context_start(j):j]."""
    total = []
    with torch.no_grad():
        for j in range(1, toks.numel()):
            logits = model.logits(toks[context_start(j):j][None])[0, -1].double()
            total.append((torch.logsumexp(logits, 0) - logits[toks[j]]).item())
    return math.fsum(total)


def test_every_mode_divides_by_the_original_bytes(built):
    out, tok, val_docs = built
    ds = prepare_data(_cfg(out, tok), lambda *a: None)
    # the first whole documents (the stream ends before a BOS): their original bytes straight from their text
    bos = torch.nonzero(ds.val_tokens == 1).flatten().tolist()
    k = max([1] + [i for i, p in enumerate(bos) if p <= 400])
    end = bos[k]
    toks, nbytes = ds.val_tokens[:end].long(), ds.val_bytes[:end]
    docs = find_docs(toks, 1)
    assert len(docs) == k
    original = sum(len(d.encode("utf-8")) for d in val_docs[:k])
    model = _tiny_model(ds.vocab_size)
    cpu = torch.device("cpu")
    L, S, C = 32, 24, 8
    plain = eval_windows(model, toks, nbytes, L, L, 3, cpu)
    sliding = eval_windows(model, toks, nbytes, L, 8, 4, cpu)
    ttt = eval_ttt(model, toks, nbytes, cpu, rank_r=2, lr=0.0, chunk=C, seq_len=S, batch_docs=2)
    starts = {}
    for s0, n in docs:
        for ws, cs, ce in ttt_chunks(n - 1, C, S):
            for t in range(cs, ce):
                starts[s0 + t + 1] = s0 + ws
    for r, start in ((plain, lambda j: ((j - 1) // L) * L), (sliding, lambda j: max(0, math.ceil((j - L) / 8) * 8)),
                     (ttt, lambda j: starts[j])):
        nll = _direct_nll(model, toks, start)
        assert r.bytes == original
        assert r.bpb == pytest.approx(nll / (math.log(2) * original), rel=1e-6)  # the eval sums float32 NLLs
        table_bytes = float(target_bytes(ds.table, toks).sum())  # the transformed text's bytes: another number
        assert abs(r.bpb - nll / (math.log(2) * table_bytes)) > 1e-3


@pytest.mark.parametrize("damage,needle", [
    (lambda p: write_shard(p, read_shard(p)[:-1]), "byte counts for the"),
    (lambda p: p.unlink(), "missing"),
    (lambda p: write_shard(p, read_shard(p) + 1), "sha256"),
])
def test_a_bad_sidecar_is_refused_naming_the_file(built, tmp_path, damage, needle):
    out, tok, _ = built
    folder = tmp_path / "data"
    shutil.copytree(out, folder)
    bad = sidecar_path(sorted(folder.glob("fineweb_val_[0-9]*.bin"))[-1])
    damage(bad)
    with pytest.raises(InputError) as e:
        prepare_data(_cfg(folder, tok), lambda *a: None)
    assert str(bad) in str(e.value) and needle in str(e.value)


def test_a_short_sidecar_ends_the_command_with_exit_code_2(built, tmp_path):
    out, tok, _ = built
    folder = tmp_path / "data"
    shutil.copytree(out, folder)
    bad = sidecar_path(sorted(folder.glob("fineweb_val_[0-9]*.bin"))[0])
    write_shard(bad, read_shard(bad)[:-3])
    sets = [a for s in tiny_overrides() + [f"data.tokenizer={tok}", "model.vocab_size=0"] for a in ("--set", s)]
    p = run_cli(["-m", "pgolf", "train", "--recipe", "smoke", "--data", str(folder), "--out", str(tmp_path / "runs"),
                 "--name", "r", *sets], timeout=300)
    assert p.returncode == 2, p.stderr[-2000:]
    assert str(bad) in p.stderr and "Traceback" not in p.stderr


@pytest.fixture(scope="module")
def caseops_run(built, tmp_path_factory):
    """A smoke run trained on the CaseOps build: its run directory."""
    out, tok, _ = built
    runs = tmp_path_factory.mktemp("caseops_runs")
    sets = [a for s in tiny_overrides(eval__max_tokens=0) + [f"data.tokenizer={tok}", "model.vocab_size=0"]
            for a in ("--set", s)]
    p = run_cli(["-m", "pgolf", "train", "--recipe", "smoke", "--data", str(out), "--out", str(runs), "--name",
                 "c", *sets], env={"OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stderr[-3000:]
    return runs / "c"


def test_a_caseops_run_divides_by_the_sidecars_and_the_audit_checks_them(built, caseops_run, tmp_path, capsys):
    from pgolf.cli import main
    from test_audit import lines

    out, tok, val_docs = built
    run = caseops_run
    summary = json.loads((run / "summary.json").read_text())
    assert "sidecar" in summary["byte_source"] and "byte sidecars" in (run / "train.log").read_text()
    original = sum(len(d.encode("utf-8")) for d in val_docs)
    assert set(summary["roundtrip"]) >= {"plain", "sliding", "ttt"}
    assert all(v["bytes"] == original for v in summary["roundtrip"].values())
    main(["audit", str(run), "--data", str(out)])
    assert lines(capsys.readouterr().out)["data: bytes of the original text"] == "PASS"
    other = tmp_path / "other"  # a sidecar that is not the build's
    shutil.copytree(out, other)
    bad = sidecar_path(sorted(other.glob("fineweb_val_[0-9]*.bin"))[0])
    write_shard(bad, read_shard(bad) + 1)
    main(["audit", str(run), "--data", str(other)])
    assert lines(capsys.readouterr().out)["data: bytes of the original text"] == "FAIL"
    for f in other.glob("fineweb_val_bytes_*.bin"):  # no sidecars at all, and a run that divided by the table
        f.unlink()
    s = dict(summary, byte_source="byte table of tok.model")
    (run / "summary.json").write_text(json.dumps(s))
    main(["audit", str(run), "--data", str(other)])
    assert lines(capsys.readouterr().out)["data: bytes of the original text"] == "FAIL"


def test_bench_data_script_builds_a_named_tokenizer_with_the_transform_it_needs(built, tmp_path):
    """bench/data.sh NAME (what bench/proxy.sh runs for TOK=NAME): golfbench's text through .bench/tokenizers/
    NAME.model into .data/golfbench_NAME, with --caseops exactly when the tokenizer is a CaseOps one (byte sidecars
    of the original bytes beside the val shards); a name with no tokenizer is one line and exit 2."""
    import lzma
    import os
    import subprocess
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    root = tmp_path / "repo"
    (root / "bench").mkdir(parents=True)
    shutil.copy(repo / "bench" / "data.sh", root / "bench" / "data.sh")
    text, toks = root / ".bench" / "text", root / ".bench" / "tokenizers"
    text.mkdir(parents=True)
    toks.mkdir()
    _, tok, _ = built
    val = make_docs(5, seed=3)
    for split, docs in (("train", make_docs(40, seed=2)), ("val", val)):
        with lzma.open(text / f"golfbench_{split}.jsonl.xz", "wt", encoding="utf-8") as f:
            f.write("".join(json.dumps({"text": d}) + "\n" for d in docs))
    shutil.copy(tok, toks / "caps.model")
    assert data_cli(["tokenizer", "--input", str(text / "golfbench_train.jsonl.xz"), "--vocab", "400", "--out",
                     str(toks / "plain")]) == 0
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")

    def data_sh(*names):
        return subprocess.run(["bash", str(root / "bench" / "data.sh"), *names], env=env, capture_output=True,
                              text=True, timeout=300)

    r = data_sh("caps", "plain")
    assert r.returncode == 0, r.stderr[-2000:]
    caps, plain = (json.loads((root / ".data" / f"golfbench_{n}" / "manifest.json").read_text())
                   for n in ("caps", "plain"))
    assert caps["transform"] == caseops.NAME and "transform" not in plain
    assert caps["splits"]["val"]["sidecar_bytes"] == sum(len(d.encode("utf-8")) for d in val)
    assert list((root / ".data" / "golfbench_caps").glob("fineweb_val_bytes_*.bin"))
    assert not list((root / ".data" / "golfbench_plain").glob("fineweb_val_bytes_*.bin"))
    r = data_sh("nosuch")
    assert r.returncode == 2 and r.stderr.strip() == (
        "bench/data.sh: no tokenizer .bench/tokenizers/nosuch.model for 'nosuch'"), r.stderr


def test_eval_splits_every_modes_score_by_the_documents_source(built, caseops_run, tmp_path):
    """`pgolf eval --by-source TEXT.jsonl`: per mode, one line per source (the documents' "source" field, in the
    order the val set was built from them) whose tokens, bytes and NLL add up to the mode's own; a file with
    another number of documents than the val set is one line naming it, exit 2, before any eval."""
    import re

    out, _, val_docs = built
    src = tmp_path / "val.jsonl"
    names = ["wiki" if i % 3 == 1 else "fineweb" for i in range(len(val_docs))]
    src.write_text("".join(json.dumps({"source": n, "text": d}) + "\n" for n, d in zip(names, val_docs)))
    p = run_cli(["-m", "pgolf", "eval", str(caseops_run / "model.pgz"), "--data", str(out), "--by-source", str(src)],
                env={"OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stderr[-3000:]
    modes = {m: (float(b), int(t), int(n)) for m, b, t, n in
             re.findall(r"^(\w+): val_loss:\S+ val_bpb:(\S+) tokens:(\d+) bytes:(\d+)", p.stdout, re.M)}
    assert set(modes) == {"plain", "sliding", "ttt"}
    for mode, (bpb, tokens, nbytes) in modes.items():
        rows = re.findall(rf"^{mode} by source: (\w+): val_bpb:(\S+) docs:(\d+) tokens:(\d+) bytes:(\d+)$",
                          p.stdout, re.M)
        assert [r[0] for r in rows] == ["fineweb", "wiki"]
        assert [int(r[2]) for r in rows] == [names.count("fineweb"), names.count("wiki")]
        assert sum(int(r[3]) for r in rows) == tokens and sum(int(r[4]) for r in rows) == nbytes
        wiki_bytes = sum(len(d.encode("utf-8")) for n, d in zip(names, val_docs) if n == "wiki")
        assert int(rows[1][4]) == wiki_bytes  # the sidecar's original bytes of those documents
        assert sum(float(r[1]) * int(r[4]) for r in rows) / nbytes == pytest.approx(bpb, rel=1e-7)
        assert float(rows[0][1]) != float(rows[1][1])
    short = tmp_path / "short.jsonl"
    short.write_text("".join(src.read_text().splitlines(keepends=True)[:-1]))
    p = run_cli(["-m", "pgolf", "eval", str(caseops_run / "model.pgz"), "--data", str(out), "--by-source", str(short)],
                env={"OMP_NUM_THREADS": "1"})
    assert p.returncode == 2 and p.stderr.strip().splitlines()[-1].endswith(
        f"{short}: 5 documents, but the val set of {out} has 6: not the text it was built from")
    assert "val_bpb" not in p.stdout
    (tmp_path / "nosource.jsonl").write_text('{"source": "wiki", "text": "a"}\n{"text": "b"}\n')
    (tmp_path / "plain.txt").write_text("a\nb\n")
    for name, needle in (("nosource.jsonl", ':2: expected a JSON object with a "source" string'),
                         ("plain.txt", ': --by-source needs JSON lines with a "source" field')):
        with pytest.raises(InputError, match=re.escape(str(tmp_path / name) + needle)):
            datasets.document_sources(tmp_path / name)


def test_a_packed_file_has_no_by_source_and_says_so(built, caseops_run, tmp_path, monkeypatch, capsys):
    """The data pipeline is not packed into train_gpt.py (pgolf.tools and pgolf.datasets stay out of its bytes):
    there, `eval --by-source` is one line and exit 2."""
    from pgolf.cli import main

    out, _, _ = built
    monkeypatch.setitem(sys.modules, "pgolf.tools", None)  # as in a packed file: the module cannot be imported
    rc = main(["eval", str(caseops_run / "model.pgz"), "--data", str(out), "--by-source", str(tmp_path / "x.jsonl")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1].endswith("--by-source needs the pgolf package: a packed train_gpt.py has no data tools")
