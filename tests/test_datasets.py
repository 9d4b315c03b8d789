"""pgolf data: fetching from a hub look-alike on 127.0.0.1, tokenizer training, shard building and decoding."""

import gzip
import hashlib
import json
import lzma
import random
import re
import threading
import unicodedata
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from conftest import data_cli
from pgolf import datasets
from pgolf.config import InputError
from pgolf.data import read_header, read_shard, write_shard
from pgolf.tokenizer import load_sentencepiece, train_tokenizer

WORDS = ("the a of to and in is was for on with as by at from that this it be are have not but or an which one all "
         "data model token shard golf parameter train valid byte piece number time world river city music garden "
         "café naïve über straße façade").split()


def make_docs(n: int, seed: int) -> list[str]:
    """Single-spaced documents without newlines, which SentencePiece's nmt_nfkc normalisation leaves as they are."""
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(3, 60))]
        words.insert(rng.randrange(len(words)), str(rng.randint(0, 10**6)))
        if i % 7 == 3:
            words.append("日本語 → ∑")  # rare characters: byte fallback
        docs.append(" ".join(words).capitalize() + ".")
    assert all(unicodedata.normalize("NFKC", d) == d for d in docs)
    return docs


def write_jsonl(path, docs):
    opener = {".xz": lzma.open, ".gz": gzip.open}.get(path.suffix, open)
    with opener(path, "wt", encoding="utf-8") as f:
        for i, d in enumerate(docs):
            f.write(json.dumps({"id": i, "text": d, "url": "x"}) + "\n")


@pytest.fixture(scope="module")
def tok_path(tmp_path_factory) -> Path:
    """A tokenizer trained here with the challenge's settings (byte fallback) on a few hundred generated lines."""
    prefix = tmp_path_factory.mktemp("tok") / "test_bpe"
    return train_tokenizer(make_docs(400, seed=0), 320, str(prefix), num_threads=2).model


@pytest.fixture(scope="module")
def tok(tok_path):
    return load_sentencepiece(tok_path)


def framed(sp, docs) -> np.ndarray:
    return np.array([t for d in docs for t in [sp.bos_id(), *sp.encode(d)]], dtype=np.uint16)


# ---------------------------------------------------------------------------------------------------------------
# build / decode


def test_build_roundtrip_split_straddle_and_manifest(tmp_path, tok, tok_path, monkeypatch):
    monkeypatch.setattr(datasets, "_CHUNK_CHARS", 300)  # many small chunks: order across 2 worker processes
    docs = make_docs(60, seed=1)
    src = tmp_path / "docs.jsonl"
    write_jsonl(src, docs)
    src.write_text(src.read_text(encoding="utf-8") + "\n  \n", encoding="utf-8")  # blank lines are not documents
    out = tmp_path / "out"
    manifest = datasets.build_shards(src, tok_path, out, val_docs=7, shard_tokens=97, workers=2, progress=False)

    val, train = docs[:7], docs[7:]
    for split, split_docs in (("val", val), ("train", train)):
        files = sorted(out.glob(f"fineweb_{split}_*.bin"))
        sizes = [read_header(f) for f in files]
        assert all(n == 97 for n in sizes[:-1]) and 0 < sizes[-1] <= 97
        stream = np.concatenate([read_shard(f) for f in files])
        np.testing.assert_array_equal(stream, framed(tok, split_docs))
        assert datasets.decode_shards(files, tok) == split_docs
        assert datasets.decode_shards(files, tok_path) == split_docs
        m = manifest["splits"][split]
        assert m["docs"] == len(split_docs) and m["tokens"] == stream.size
        assert m["text_bytes"] == sum(len(d.encode("utf-8")) for d in split_docs)
        assert m["shards"] == [{"file": f.name, "tokens": n} for f, n in zip(files, sizes)]
    straddled = [f for f in out.glob("fineweb_train_*.bin") if read_shard(f)[0] != tok.bos_id()]
    assert straddled, "with 97-token shards some document must continue into the next shard"
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert manifest["vocab_size"] == tok.vocab_size() and manifest["bos_id"] == 1 and not manifest["append_eos"]
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith("fineweb_")) == ["manifest.json"]
    # a build anywhere finds its tokenizer through the manifest, while that file still has the recorded sha256
    from pgolf.data import find_tokenizer
    assert find_tokenizer(out) == Path(tok_path).resolve()
    bad = dict(manifest, tokenizer_sha256="0" * 64)
    (out / "manifest.json").write_text(json.dumps(bad))
    with pytest.raises(FileNotFoundError, match="no tokenizer found"):
        find_tokenizer(out)


def test_build_val_input_formats_and_worker_count_agree(tmp_path, tok, tok_path):
    val, train = make_docs(5, seed=2), make_docs(30, seed=3)
    val_src, train_src = tmp_path / "val.txt.gz", tmp_path / "train.jsonl.xz"
    with gzip.open(val_src, "wt", encoding="utf-8") as f:
        f.write("\n".join(val) + "\n")
    write_jsonl(train_src, train)
    built = {}
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        assert data_cli(["build", "--input", str(train_src), "--val-input", str(val_src), "--tokenizer", str(tok_path),
                    "--out", str(out), "--shard-tokens", "150", "--workers", str(workers)]) == 0
        built[workers] = {p.name: p.read_bytes() for p in out.glob("fineweb_*.bin")}
        assert datasets.decode_shards(sorted(out.glob("fineweb_val_*.bin")), tok) == val
        assert datasets.decode_shards(sorted(out.glob("fineweb_train_*.bin")), tok) == train
    assert built[1] == built[2]


def test_decode_matches_sentencepiece_for_text_it_normalises(tmp_path, tok, tok_path):
    docs = ["Two  spaces\nand a newline", "ﬁne ligature", "plain text"]
    src = tmp_path / "docs.jsonl"
    write_jsonl(src, docs)
    out = tmp_path / "out"
    datasets.build_shards(src, tok_path, out, val_docs=1, workers=1, progress=False)
    files = [out / "fineweb_val_000000.bin", out / "fineweb_train_000000.bin"]
    assert datasets.decode_shards(files, tok) == [tok.decode(tok.encode(d)) for d in docs]


def test_failed_build_keeps_the_previous_one(tmp_path, tok_path):
    src = tmp_path / "docs.jsonl"
    write_jsonl(src, make_docs(10, seed=4))
    out = tmp_path / "out"
    datasets.build_shards(src, tok_path, out, val_docs=2, workers=1, progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    bad = tmp_path / "bad.jsonl"
    bad.write_text(src.read_text() + '{"text": "fine"}\n{"txt": "no text field"}\n', encoding="utf-8")
    with pytest.raises(InputError, match=re.escape(f"{bad}:12") + '.*"text" string'):
        datasets.build_shards(bad, tok_path, out, val_docs=2, workers=2, progress=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no staging folder, nothing half-written


@pytest.mark.parametrize("kwargs,needle", [
    (dict(val_docs=11), "has 10 documents, fewer than --val-docs 11"),
    (dict(), "exactly one of --val-docs"),
    (dict(val_docs=1, shard_tokens=0), "--shard-tokens 0"),
    (dict(val_input="missing.jsonl"), "missing.jsonl: no such document file"),
    (dict(val_input="docs.csv"), "docs.csv: unknown document format"),
])
def test_build_input_errors(tmp_path, tok_path, monkeypatch, kwargs, needle):
    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "docs.jsonl", make_docs(10, seed=5))
    with pytest.raises(InputError, match=re.escape(needle)):
        datasets.build_shards("docs.jsonl", tok_path, "out", workers=1, progress=False, **kwargs)


# ---------------------------------------------------------------------------------------------------------------
# tokenizer


@pytest.mark.parametrize("name", ["corpus.jsonl.gz", "corpus.txt"])
def test_tokenizer_command(tmp_path, name, capsys):
    src = tmp_path / name
    docs = make_docs(300, seed=6)
    if name.endswith(".txt"):
        src.write_text("\n".join(docs) + "\n", encoding="utf-8")
    else:
        write_jsonl(src, docs)
    prefix = tmp_path / "tok" / "fineweb_360_bpe"
    assert data_cli(["tokenizer", "--input", str(src), "--vocab", "360", "--out", str(prefix), "--max-docs", "250"]) == 0
    sp = load_sentencepiece(f"{prefix}.model")
    assert sp.vocab_size() == 360 and (tmp_path / "tok" / "fineweb_360_bpe.vocab").is_file()
    assert sp.bos_id() == 1 and sp.decode(sp.encode(docs[-1])) == docs[-1]
    assert sorted(p.name for p in (tmp_path / "tok").iterdir()) == ["fineweb_360_bpe.model", "fineweb_360_bpe.vocab"]
    assert "vocab 360" in capsys.readouterr().out


def test_tokenizer_command_says_how_many_documents_sentencepiece_skipped(tmp_path, capsys):
    """SentencePiece skips a training text over MAX_SENTENCE_BYTES (silently): the command counts them, and their
    share of the text, so a corpus of long articles does not train a tokenizer on a third of itself unnoticed."""
    from pgolf.tokenizer import MAX_SENTENCE_BYTES

    src = tmp_path / "corpus.jsonl"
    docs = make_docs(200, seed=7)
    long_docs = [" ".join(docs[:60]) * (MAX_SENTENCE_BYTES // 1000), ("x" * MAX_SENTENCE_BYTES) + " y"]
    assert all(len(d.encode()) > MAX_SENTENCE_BYTES for d in long_docs)
    write_jsonl(src, docs[:100] + long_docs + docs[100:])
    assert data_cli(["tokenizer", "--input", str(src), "--vocab", "360", "--out", str(tmp_path / "t")]) == 0
    total = sum(len(d.strip().encode()) for d in docs + long_docs)
    share = 100 * sum(len(d.encode()) for d in long_docs) / total
    assert capsys.readouterr().out.strip().endswith(
        f"vocab 360; trained on 200 of 202 documents (2 over {MAX_SENTENCE_BYTES:,} bytes, which SentencePiece "
        f"skips: {share:.0f}% of the text)")
    sp = load_sentencepiece(tmp_path / "t.model")  # and it did skip them: 16K x's would have merged into pieces
    assert not any(set(sp.id_to_piece(i)) == {"x"} and len(sp.id_to_piece(i)) > 1 for i in range(sp.vocab_size()))
    assert data_cli(["tokenizer", "--input", str(src), "--vocab", "360", "--out", str(tmp_path / "u"),
                     "--max-docs", "100"]) == 0
    assert capsys.readouterr().out.strip().endswith("vocab 360; trained on 100 of 100 documents")


def test_tokenizer_bad_line_names_file_and_line(tmp_path):
    src = tmp_path / "corpus.jsonl"
    src.write_text('{"text": "ok"}\n\n{"text": 3}\n', encoding="utf-8")
    with pytest.raises(InputError, match=re.escape(f"{src}:3")):
        datasets.train_tokenizer_from_file(src, 300, tmp_path / "t")
    assert list(tmp_path.glob("t*")) == []


# ---------------------------------------------------------------------------------------------------------------
# fineweb: a hub look-alike


COMMIT = "0123456789abcdef0123456789abcdef01234567"
REPO = "someone/parameter-golf"


class FakeHub:
    """Serves one dataset repo the way huggingface_hub 2.4's ``hf_hub_download`` reads the real hub.

    HEAD and GET on ``/datasets/{repo}/resolve/{revision}/{path}`` answer with X-Repo-Commit, ETag and
    Content-Length (no X-Xet-Hash, so the client takes the plain HTTP path) and honour ``Range: bytes=N-``.
    A file in ``cut_once`` has its first body cut off halfway; one in ``broken`` has every full body cut off and
    every resumed (Range) request refused with a 500.
    """

    def __init__(self, files: dict[str, bytes]):
        self.files = files
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path in repo, Range header)
        self.cut_once: set[str] = set()
        self.broken: set[str] = set()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_HEAD(self):
                hub.serve(self, body=False)

            def do_GET(self):
                hub.serve(self, body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def gets(self, name: str = "") -> list[str | None]:
        """The Range headers of the GET requests for files whose path ends with ``name``."""
        return [r for m, path, r in self.requests if m == "GET" and path.endswith(name)]

    def serve(self, h: BaseHTTPRequestHandler, body: bool) -> None:
        m = re.fullmatch(r"/datasets/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", urllib.parse.unquote(h.path))
        path, rng = (m.group(3) if m else h.path), h.headers.get("Range")
        self.requests.append((h.command, path, rng))
        data = self.files.get(path) if m and m.group(1) == REPO else None
        start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1)) if rng else 0
        if data is None or (body and start and path in self.broken):
            h.send_response(404 if data is None else 500)
            h.send_header("X-Repo-Commit", COMMIT)
            if data is None:
                h.send_header("X-Error-Code", "EntryNotFound")
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        h.send_response(206 if start else 200)
        h.send_header("X-Repo-Commit", COMMIT)
        h.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        h.send_header("Accept-Ranges", "bytes")
        h.send_header("Content-Type", "application/octet-stream")
        h.send_header("Content-Length", str(len(data) - start))
        if start:
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        h.end_headers()
        if not body:
            return
        if not start and (path in self.cut_once or path in self.broken):
            self.cut_once.discard(path)
            h.wfile.write(data[: len(data) // 2])
            h.wfile.flush()
            h.close_connection = True  # the client sees the body end early
            return
        h.wfile.write(data[start:])


def shard_bytes(tmp_path, name: str, n: int, seed: int) -> bytes:
    p = tmp_path / name
    write_shard(p, np.random.default_rng(seed).integers(0, 320, size=n))
    return p.read_bytes()


@pytest.fixture
def hub(tmp_path, tok_path):
    src = tmp_path / "server"
    src.mkdir()
    ds = "datasets/datasets/fineweb10B_sp320"
    manifest = {
        "version": "10B", "num_val_docs": 10,
        "tokenizers": [{"name": "sp_bpe_320", "kind": "sentencepiece_bpe", "vocab_size": 320, "bos_id": 1,
                        "model_path": "tokenizers/fineweb_320_bpe.model",
                        "vocab_path": "tokenizers/fineweb_320_bpe.vocab"}],
        "datasets": [{"name": "fineweb10B_sp320", "tokenizer_name": "sp_bpe_320", "vocab_size": 320,
                      "path": "datasets/fineweb10B_sp320", "stats": {"files_val": 1, "files_train": 2}}],
    }
    h = FakeHub({
        "datasets/manifest.json": json.dumps(manifest).encode(),
        f"{ds}/fineweb_val_000000.bin": shard_bytes(src, "v0.bin", 4000, 0),
        f"{ds}/fineweb_train_000000.bin": shard_bytes(src, "t0.bin", 6000, 1),
        f"{ds}/fineweb_train_000001.bin": shard_bytes(src, "t1.bin", 5000, 2),
        "datasets/tokenizers/fineweb_320_bpe.model": tok_path.read_bytes(),
        "datasets/tokenizers/fineweb_320_bpe.vocab": tok_path.with_suffix(".vocab").read_bytes(),
    })
    yield h
    h.close()


def fetch(hub, tmp_path, train_shards=1, variant="sp320"):
    return datasets.fetch_fineweb(variant, train_shards, tmp_path / "data", repo_id=REPO, endpoint=hub.url,
                                  cache_dir=tmp_path / "hf-cache")


def assert_layout(hub, tmp_path, train_shards=1):
    data = tmp_path / "data"
    expect = {"manifest.json", "datasets/fineweb10B_sp320/fineweb_val_000000.bin",
              "tokenizers/fineweb_320_bpe.model", "tokenizers/fineweb_320_bpe.vocab"}
    expect |= {f"datasets/fineweb10B_sp320/fineweb_train_{i:06d}.bin" for i in range(train_shards)}
    assert {p.relative_to(data).as_posix() for p in data.rglob("*") if p.is_file()} == expect
    for rel in expect:
        assert (data / rel).read_bytes() == hub.files[f"datasets/{rel}"]
    assert read_header(data / "datasets/fineweb10B_sp320/fineweb_val_000000.bin") == 4000


def test_fetch_into_challenge_layout_then_rerun_downloads_nothing(hub, tmp_path):
    res = fetch(hub, tmp_path)
    assert len(res.fetched) == 4 and res.skipped == []
    assert_layout(hub, tmp_path)
    assert not hub.gets("fineweb_train_000001.bin")

    hub.requests.clear()
    res = fetch(hub, tmp_path)
    assert res.fetched == [] and len(res.skipped) == 4
    assert hub.gets() == []  # only the manifest's HEAD: nothing is downloaded again

    # A local shard damaged in place (which damages the hub cache's blob it is a hard link of) is fetched again
    # from the server; more train shards come on request.
    (tmp_path / "data/datasets/fineweb10B_sp320/fineweb_val_000000.bin").write_bytes(b"\0" * 100)
    res = fetch(hub, tmp_path, train_shards=2)
    assert [p.name for p in res.fetched] == ["fineweb_val_000000.bin", "fineweb_train_000001.bin"]
    assert hub.gets("fineweb_val_000000.bin") == [None] and hub.gets("fineweb_train_000001.bin") == [None]
    assert len(hub.gets()) == 2
    assert_layout(hub, tmp_path, train_shards=2)


def test_fetch_command_with_endpoint(hub, tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))  # the CLI uses the default cache
    assert data_cli(["fineweb", "--variant", "sp320", "--train-shards", "1", "--repo-id", REPO,
                "--out", str(tmp_path / "data"), "--endpoint", hub.url]) == 0
    assert_layout(hub, tmp_path)


def test_fetch_unknown_variant_lists_the_known_ones(hub, tmp_path):
    with pytest.raises(InputError, match=r"variant 'sp1024' is not in dataset someone/parameter-golf .*has: sp320"):
        fetch(hub, tmp_path, variant="sp1024")
    with pytest.raises(InputError, match="--train-shards 3: sp320 has only 2 train shards"):
        fetch(hub, tmp_path, train_shards=3)


def test_fetch_corrupt_shard_on_server_names_it(hub, tmp_path):
    name = "datasets/datasets/fineweb10B_sp320/fineweb_val_000000.bin"
    hub.files[name] = hub.files[name][:-10]  # header says 4000 tokens; the body is short
    with pytest.raises(datasets.DownloadError, match=re.escape(name) + ".*failed verification.*truncated"):
        fetch(hub, tmp_path)
    assert not (tmp_path / "data/datasets/fineweb10B_sp320/fineweb_val_000000.bin").exists()


@pytest.fixture
def small_chunks(monkeypatch):
    """huggingface_hub writes (and so can resume from) whole 10 MB chunks; make the test's small shards many chunks."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 1024)


def test_fetch_resumes_an_interrupted_body_with_a_range_request(hub, tmp_path, small_chunks):
    name = "datasets/datasets/fineweb10B_sp320/fineweb_train_000000.bin"
    hub.cut_once.add(name)
    fetch(hub, tmp_path)
    first, resumed = hub.gets(name)
    assert first is None and 0 < int(re.fullmatch(r"bytes=(\d+)-", resumed).group(1)) <= len(hub.files[name]) // 2
    assert_layout(hub, tmp_path)


def test_failed_transfer_leaves_nothing_and_a_rerun_completes(hub, tmp_path, small_chunks):
    name = "datasets/datasets/fineweb10B_sp320/fineweb_val_000000.bin"
    hub.broken.add(name)
    with pytest.raises(datasets.DownloadError, match=re.escape(f"fetching {name} from dataset {REPO} on {hub.url}")):
        fetch(hub, tmp_path)
    assert not (tmp_path / "data/datasets/fineweb10B_sp320").exists()
    assert not [p for p in (tmp_path / "hf-cache").rglob("*") if "incomplete" in p.name or p.name.endswith(".bin")]
    hub.broken.clear()
    res = fetch(hub, tmp_path)
    assert len(res.fetched) == 4
    assert_layout(hub, tmp_path)
