"""The data pipeline: fetch the challenge's published shards, train a tokenizer, tokenize documents into shards.

    pgolf data fineweb --variant sp1024 --train-shards 10 [--out data] [--repo-id R] [--endpoint URL]
    pgolf data tokenizer --input docs.jsonl.xz --vocab 1024 --out tokenizers/fineweb_1024_bpe [--max-docs K]
    pgolf data build --input train.jsonl.xz --val-input val.jsonl.xz --tokenizer tok.model --out DIR
    pgolf data build --input docs.jsonl --val-docs 50000 --tokenizer tok.model --out DIR [--shard-tokens N]

``fineweb`` mirrors the challenge's ``data/cached_challenge_fineweb.py``: the remote ``datasets/manifest.json`` of a
Hugging Face dataset repo names, per variant, the shard counts and the tokenizer files; all validation shards, the
first N train shards and the tokenizer land in ``<out>/datasets/fineweb10B_<variant>/`` and ``<out>/tokenizers/``.
Files are placed atomically and verified, so a rerun skips what is in place and fetches the rest.

``build`` frames every document as ``[BOS] + sp.encode(text)`` (no EOS) and packs the stream into shards of at most
``--shard-tokens`` tokens, a document straddling two shards where it falls, exactly as
``data/download_hf_docs_and_tokenize.py`` does; ``decode_shards`` inverts it for checking.

``--caseops`` (both ``tokenizer`` and ``build``): the text goes through the lossless case transform of
``pgolf/caseops.py`` first (its operators are user-defined pieces of the tokenizer), and ``build`` writes beside each
validation shard a byte sidecar ``fineweb_val_bytes_NNNNNN.bin`` (the shard format, one uint16 per token: the
ORIGINAL text's UTF-8 bytes that token stands for; 0 for BOS and operators), which the eval divides by. The
manifest records the transform and every sidecar's sha256.

Document files: ``*.jsonl`` holds one JSON object per line whose ``"text"`` string is the document (other fields are
ignored); ``*.txt`` holds one document per line (without its line ending). Either may end in ``.xz`` or ``.gz``.
Blank lines are skipped in both.

``fineweb`` needs huggingface_hub and ``build`` tqdm: the ``data`` extra (``pip install 'pgolf[data]'``), imported
only when used, so training never needs them.
"""

from __future__ import annotations

import argparse
import gzip
import json
import lzma
import multiprocessing
import os
import shutil
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from itertools import islice, starmap
from pathlib import Path, PurePosixPath
from typing import IO, Any

import numpy as np

from . import caseops
from .config import InputError
from .data import ShardError, read_header, read_shard, sidecar_path, write_shard
from .files import sha256_file, write_json
from .tokenizer import MAX_SENTENCE_BYTES, TrainedTokenizer, check_space_piece, load_sentencepiece, train_tokenizer

DEFAULT_REPO_ID = "willdepueoai/parameter-golf"
REMOTE_PREFIX = "datasets"  # the export's root folder inside the dataset repo
SHARD_TOKENS = 100_000_000  # the challenge's shard size
MAX_VOCAB = 2**16  # shards store uint16 ids
_CHUNK_CHARS = 1 << 20  # text per encoding task: large enough to amortise the inter-process traffic


def need(module: str, what: str):
    """Import an optional dependency of the ``data`` extra, or stop with one line saying how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise InputError(f"{what} needs {module}, which is not installed: pip install 'pgolf[data]'") from None


class DownloadError(InputError):
    """A file could not be fetched or failed verification (an InputError, so the CLI reports it in one line)."""


# ---------------------------------------------------------------------------------------------------------------
# Documents


_DECOMPRESSORS: dict[str, Callable[..., IO[str]]] = {".xz": lzma.open, ".gz": gzip.open}
_READ_ERRORS = (UnicodeDecodeError, lzma.LZMAError, gzip.BadGzipFile, EOFError)


def _document_format(path: Path) -> tuple[Callable[..., IO[str]], bool]:
    """The opener for a document file and whether it is JSON lines, both from the file name."""
    name, opener = path.name, open
    for ext, decompressor in _DECOMPRESSORS.items():
        if name.endswith(ext):
            name, opener = name[: -len(ext)], decompressor
    if name.endswith(".jsonl"):
        return opener, True
    if name.endswith(".txt"):
        return opener, False
    raise InputError(f"{path}: unknown document format; name it *.jsonl (JSON lines with a \"text\" field) or *.txt "
                     "(one document per line), optionally + .xz or .gz")


def _raw_documents(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, raw line) of each non-blank line; parsing is left to ``_parse_document``, maybe in a worker.

    The name and existence are checked now, not at the first line, so a bad path fails before any work starts.
    """
    opener, _ = _document_format(path)
    if not path.is_file():
        raise InputError(f"{path}: no such document file")
    return _numbered_lines(path, opener)


def _numbered_lines(path: Path, opener: Callable[..., IO[str]]) -> Iterator[tuple[int, str]]:
    try:
        # newline="\n": only "\n" ends a document, so a stray "\r" inside a text line stays part of it
        with opener(path, "rt", encoding="utf-8", newline="\n") as f:
            for lineno, line in enumerate(f, 1):
                if line.strip():
                    yield lineno, line
    except _READ_ERRORS as e:
        raise InputError(f"{path}: cannot read ({e})") from None


def _parse_document(line: str, jsonl: bool, where: str, field: str = "text") -> str:
    """A document's text (or, JSON lines only, another string ``field`` of it, e.g. golfbench's "source")."""
    if not jsonl:
        return line.rstrip("\r\n")
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise InputError(f"{where}: not valid JSON ({e})") from None
    value = obj.get(field) if isinstance(obj, dict) else None
    if not isinstance(value, str):
        raise InputError(f'{where}: expected a JSON object with a "{field}" string')
    return value


def iter_documents(path: str | os.PathLike) -> Iterator[str]:
    """Each document's text, in file order (see the module docstring for the formats)."""
    path = Path(path)
    _, jsonl = _document_format(path)
    lines = _raw_documents(path)  # checks the name and existence now, not at the first document
    return (_parse_document(line, jsonl, f"{path}:{lineno}") for lineno, line in lines)


def document_sources(path: str | os.PathLike) -> list[str]:
    """The "source" field of each document of a JSON-lines file, in file order (golfbench's text: "fineweb" or
    "wiki"), for splitting a score by where its documents came from (``pgolf eval --by-source``)."""
    path = Path(path)
    _, jsonl = _document_format(path)
    if not jsonl:
        raise InputError(f'{path}: --by-source needs JSON lines with a "source" field, not one document per line')
    return [_parse_document(line, True, f"{path}:{lineno}", "source") for lineno, line in _raw_documents(path)]


# ---------------------------------------------------------------------------------------------------------------
# Tokenizer


def train_tokenizer_from_file(input_path: str | os.PathLike, vocab_size: int, prefix: str | os.PathLike,
                              max_docs: int = 0, case_ops: bool = False) -> TrainedTokenizer:
    """Train a SentencePiece BPE with the challenge's settings on the first ``max_docs`` documents (0: all); with
    ``case_ops`` on their CaseOps transform, the operators as user-defined pieces (ids 4-7). Returns the model and
    what it was trained on: SentencePiece skips a document over ``MAX_SENTENCE_BYTES`` (on golfbench's
    Wikipedia-heavy train text, 63% of the bytes), and the command says so.

    Writes PREFIX.model and PREFIX.vocab only once training has succeeded, so a failure leaves no half-written pair.
    """
    if not 0 < vocab_size <= MAX_VOCAB:
        raise InputError(f"--vocab {vocab_size}: must be in [1, {MAX_VOCAB}] (shards store uint16 ids)")
    if max_docs < 0:
        raise InputError(f"--max-docs {max_docs}: must be >= 0 (0 = all documents)")
    input_path, prefix = Path(input_path), Path(prefix)
    docs = iter_documents(input_path)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    tmp = prefix.with_name(prefix.name + ".partial")
    used = 0
    read_error: InputError | None = None

    def texts() -> Iterator[str]:
        # SentencePiece turns an exception from its iterator into a RuntimeError; keep ours to re-raise it as is.
        nonlocal used, read_error
        try:
            for text in islice(docs, max_docs or None):
                used += 1
                yield caseops.encode(text) if case_ops else text
        except InputError as e:
            read_error = e
            raise

    try:
        try:
            trained = train_tokenizer(texts(), vocab_size, str(tmp),
                                      user_defined_symbols=caseops.OPERATORS if case_ops else ())
        except RuntimeError as e:
            if read_error is not None:
                raise read_error from None
            if used == 0:
                raise InputError(f"{input_path}: no documents") from None
            # e.g. "Vocabulary size is smaller than required_chars": byte pieces and the text's characters come first
            raise InputError(f"{input_path}: SentencePiece training failed: {e}") from None
        for ext in (".model", ".vocab"):
            os.replace(f"{tmp}{ext}", f"{prefix}{ext}")
    finally:
        for ext in (".model", ".vocab"):
            Path(f"{tmp}{ext}").unlink(missing_ok=True)
    return trained._replace(model=Path(f"{prefix}.model"))


# ---------------------------------------------------------------------------------------------------------------
# Building shards


@dataclass
class SplitStats:
    source: str
    docs: int = 0
    empty_docs: int = 0  # documents whose text encodes to no token (kept as a lone BOS, as the challenge does)
    tokens: int = 0
    text_bytes: int = 0  # UTF-8 bytes of the documents' text (before SentencePiece's NFKC and any case transform)
    shards: list[dict[str, Any]] = field(default_factory=list)  # {"file": name, "tokens": n}, in order
    sidecar_bytes: int | None = None  # Σ the byte sidecars (CaseOps val): text_bytes less documents with no token
    sidecars: list[dict[str, Any]] = field(default_factory=list)  # {"file", "tokens", "sha256"}, one per shard


class _ShardWriter:
    """Packs a split's token stream into shards of ``shard_tokens``; documents straddle shards, as in the challenge.
    A byte sidecar's writer (``sidecar``) cuts its stream at the same places, into the sidecar file of each shard."""

    def __init__(self, folder: Path, split: str, shard_tokens: int, stats: SplitStats, sidecar: bool = False):
        self.folder, self.split, self.stats, self.sidecar = folder, split, stats, sidecar
        self.buf = np.empty(shard_tokens, dtype=np.uint16)
        self.fill = 0

    def add(self, tokens: np.ndarray) -> None:
        pos = 0
        while pos < tokens.size:
            take = min(self.buf.size - self.fill, tokens.size - pos)
            self.buf[self.fill:self.fill + take] = tokens[pos:pos + take]
            self.fill += take
            pos += take
            if self.fill == self.buf.size:
                self.flush()

    def flush(self) -> None:
        if self.fill:
            shards = self.stats.sidecars if self.sidecar else self.stats.shards
            name = f"fineweb_{self.split}_{len(shards):06d}.bin"
            if self.sidecar:
                name = sidecar_path(name).name
            write_shard(self.folder / name, self.buf[:self.fill])
            shards.append({"file": name, "tokens": self.fill})
            if self.sidecar:
                shards[-1]["sha256"] = sha256_file(self.folder / name)
            self.fill = 0


_encoder: Any = None  # this process's SentencePieceProcessor, loaded once per worker by _init_encoder


def _init_encoder(model_path: str) -> None:
    global _encoder
    import sentencepiece as spm

    _encoder = spm.SentencePieceProcessor(model_file=model_path)


def _encode_chunk(source: str, jsonl: bool, lines: list[tuple[int, str]], case_ops: bool = False,
                  sidecar: bool = False) -> tuple[np.ndarray, int, int, int, np.ndarray | None]:
    """Parse and frame a chunk of documents as ``[BOS] + ids`` each (of their CaseOps transform with ``case_ops``);
    return (tokens, documents, empty documents, original text bytes, each token's original bytes or None). The
    bytes per token (``sidecar``) need the transform: see ``caseops.token_bytes``."""
    texts = [_parse_document(line, jsonl, f"{source}:{lineno}") for lineno, line in lines]
    bos = _encoder.bos_id()
    flat: list[int] = []
    per_token: list[np.ndarray] = []
    empty = 0
    if sidecar:
        for (lineno, _), text in zip(lines, texts):
            t, char_bytes = caseops.encode_with_bytes(text)
            try:
                m = _encoder.encode(t, return_type="offset_mapping")
            except (TypeError, ValueError) as e:
                raise InputError(f"a byte sidecar needs SentencePiece's offset mapping (sentencepiece >= 0.2.1): {e}"
                                 ) from None
            ids = m["ids"]
            nb = caseops.token_bytes(char_bytes, m["offsets"])
            if nb.size and nb.max() >= 2**16:
                raise InputError(f"{source}:{lineno}: a token stands for {int(nb.max()):,} original bytes, more than "
                                 "a uint16 sidecar holds")
            flat.append(bos)
            flat.extend(ids)
            per_token += [np.zeros(1, dtype=np.int64), nb]
            empty += not ids
    else:
        encoded = [caseops.encode(t) for t in texts] if case_ops else texts
        for ids in _encoder.encode(encoded, num_threads=1):  # one thread: the parallelism is across worker processes
            flat.append(bos)
            flat.extend(ids)
            empty += not ids
    side = np.concatenate(per_token).astype(np.uint16) if sidecar else None
    return np.array(flat, dtype=np.uint16), len(texts), empty, sum(len(t.encode("utf-8")) for t in texts), side


def _chunks(lines: Iterable[tuple[int, str]]) -> Iterator[list[tuple[int, str]]]:
    chunk: list[tuple[int, str]] = []
    size = 0
    for item in lines:
        chunk.append(item)
        size += len(item[1])
        if size >= _CHUNK_CHARS:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def _ordered_pool_map(pool, fn: Callable, jobs: Iterable[tuple], depth: int) -> Iterator:
    """``starmap`` over a pool, in order, with at most ``depth`` jobs in flight.

    Pool.imap would read the whole input ahead into its task queue; this keeps memory bounded by ``depth`` chunks.
    """
    pending: deque = deque()
    for job in jobs:
        pending.append(pool.apply_async(fn, job))
        if len(pending) >= depth:
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()


@contextmanager
def _encoder_map(model_path: str, workers: int) -> Iterator[Callable[[Iterable[tuple]], Iterator]]:
    """A function running ``_encode_chunk`` over jobs, results in order: on ``workers`` processes, or here if 1."""
    if workers == 1:
        _init_encoder(model_path)
        yield lambda jobs: starmap(_encode_chunk, jobs)
        return
    with multiprocessing.Pool(workers, initializer=_init_encoder, initargs=(model_path,)) as pool:
        yield lambda jobs: _ordered_pool_map(pool, _encode_chunk, jobs, 2 * workers)


def build_shards(input_path: str | os.PathLike, tokenizer: str | os.PathLike, out: str | os.PathLike, *,
                 val_docs: int | None = None, val_input: str | os.PathLike | None = None,
                 shard_tokens: int = SHARD_TOKENS, workers: int = 0, progress: bool = True,
                 case_ops: bool = False) -> dict[str, Any]:
    """Tokenize documents into ``fineweb_{val,train}_NNNNNN.bin`` shards and a ``manifest.json`` in ``out``; with
    ``case_ops``, of their CaseOps transform, with a byte sidecar beside each validation shard.

    Validation is either the first ``val_docs`` documents of ``input_path`` (the rest are train: the challenge's
    split) or every document of ``val_input`` (then all of ``input_path`` is train). Shards are written to a staging
    folder and moved into ``out`` only once all are done, replacing an earlier build's, so a failure never leaves a
    half-built set; the manifest is written last. Returns the manifest.
    """
    if (val_docs is None) == (val_input is None):
        raise InputError("give exactly one of --val-docs N (the first N documents of --input) and --val-input FILE")
    if val_docs is not None and val_docs < 0:
        raise InputError(f"--val-docs {val_docs}: must be >= 0")
    if not 0 < shard_tokens < 2**31:
        raise InputError(f"--shard-tokens {shard_tokens}: must be in [1, 2^31)")
    if workers < 0:
        raise InputError(f"--workers {workers}: must be >= 0 (0 = all cores)")
    input_path, tokenizer, out = Path(input_path), Path(tokenizer), Path(out)
    sp = load_sentencepiece(tokenizer)
    if sp.vocab_size() > MAX_VOCAB:
        raise InputError(f"{tokenizer}: vocab {sp.vocab_size()} does not fit uint16 shards (max {MAX_VOCAB})")
    if sp.bos_id() < 0:
        raise InputError(f"{tokenizer}: has no BOS piece to frame documents with")
    if case_ops != caseops.is_caseops(sp):
        raise InputError(f"{tokenizer}: " + (
            "not a CaseOps tokenizer (its operators are not pieces of their own); train one with pgolf data "
            "tokenizer --caseops" if case_ops else "a CaseOps tokenizer (the case operators are pieces); build with "
            "--caseops"))
    workers = workers or os.cpu_count() or 1
    tqdm = need("tqdm", "pgolf data build").tqdm

    _, train_jsonl = _document_format(input_path)
    train_lines = _raw_documents(input_path)
    if val_input is not None:
        val_path = Path(val_input)
        _, val_jsonl = _document_format(val_path)
        val_lines: Iterable[tuple[int, str]] = _raw_documents(val_path)
    else:
        val_path, val_jsonl = input_path, train_jsonl
        val_lines = islice(train_lines, val_docs)  # consumes exactly the first val_docs; train gets the rest
    plan = [("val", val_path, val_jsonl, val_lines), ("train", input_path, train_jsonl, train_lines)]

    out.mkdir(parents=True, exist_ok=True)
    stage = out / ".build.partial"
    shutil.rmtree(stage, ignore_errors=True)  # leftovers of a build that was killed
    stage.mkdir()
    stats: dict[str, SplitStats] = {}
    try:
        with _encoder_map(str(tokenizer), workers) as encode:
            for split, path, jsonl, split_lines in plan:
                stats[split] = s = SplitStats(source=str(path))
                writer = _ShardWriter(stage, split, shard_tokens, s)
                sidecar = case_ops and split == "val"
                bytes_writer = _ShardWriter(stage, split, shard_tokens, s, sidecar=True) if sidecar else None
                if sidecar:
                    s.sidecar_bytes = 0
                jobs = ((str(path), jsonl, chunk, case_ops, sidecar) for chunk in _chunks(split_lines))
                with tqdm(desc=split, unit=" docs", disable=not progress) as bar:
                    for tokens, docs, empty, text_bytes, side in encode(jobs):
                        writer.add(tokens)
                        if bytes_writer is not None:
                            bytes_writer.add(side)
                            s.sidecar_bytes += int(side.sum(dtype=np.int64))
                        s.docs += docs
                        s.empty_docs += empty
                        s.tokens += tokens.size
                        s.text_bytes += text_bytes
                        bar.update(docs)
                        bar.set_postfix(tokens=f"{s.tokens:,}", refresh=False)
                writer.flush()
                if bytes_writer is not None:
                    bytes_writer.flush()
        if val_docs is not None and stats["val"].docs < val_docs:
            raise InputError(f"{input_path}: has {stats['val'].docs} documents, fewer than --val-docs {val_docs}")
        for split, st in stats.items():
            if st.docs and st.empty_docs == st.docs:
                raise InputError(f"{st.source}: every {split} document is empty (no text to "
                                 f"{'score' if split == 'val' else 'train on'})")
        manifest = {
            "tokenizer": str(tokenizer.resolve()), "tokenizer_sha256": sha256_file(tokenizer),
            "vocab_size": int(sp.vocab_size()), "bos_id": int(sp.bos_id()),
            "append_eos": False, "shard_tokens": shard_tokens,
            "splits": {k: _split_record(v) for k, v in stats.items()},
        }
        if case_ops:  # what the tokens are of, and where the bytes a score divides by come from
            manifest["transform"] = caseops.NAME
            manifest["unicode_version"] = caseops.unicode_version()
            manifest["byte_sidecar"] = {"source": "original text", "files": stats["val"].sidecars}
        (out / "manifest.json").unlink(missing_ok=True)  # no manifest while the shard set is being swapped
        for old in [*out.glob("fineweb_val_*.bin"), *out.glob("fineweb_train_*.bin")]:
            old.unlink()
        for s in stats.values():
            for shard in s.shards + s.sidecars:
                os.replace(stage / shard["file"], out / shard["file"])
        write_json(out / "manifest.json", manifest)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return manifest


def _split_record(s: SplitStats) -> dict[str, Any]:
    """A split's manifest entry; the sidecar fields only where there are sidecars."""
    d = asdict(s)
    if s.sidecar_bytes is None:
        del d["sidecar_bytes"], d["sidecars"]
    return d


def decode_shards(paths: Iterable[str | os.PathLike], tokenizer) -> list[str]:
    """The documents of a shard sequence: split the token stream at BOS and decode each piece (checks ``build``);
    with a CaseOps tokenizer, the transform is undone too.

    ``tokenizer`` is a SentencePiece .model path or a loaded SentencePieceProcessor.
    """
    sp = load_sentencepiece(tokenizer) if isinstance(tokenizer, (str, os.PathLike)) else tokenizer
    paths = [Path(p) for p in paths]
    if not paths:
        return []
    stream = np.concatenate([read_shard(p) for p in paths])
    if stream.size == 0:
        return []
    bos = sp.bos_id()
    if stream[0] != bos:
        raise ShardError(f"{paths[0]}: starts with token {int(stream[0])}, not BOS {bos}; a shard before it is missing")
    bounds = np.append(np.flatnonzero(stream == bos), stream.size)
    docs = [sp.decode(stream[a + 1:b].tolist()) for a, b in zip(bounds[:-1], bounds[1:])]
    return [caseops.decode(d, strict=False) for d in docs] if caseops.is_caseops(sp) else docs


# ---------------------------------------------------------------------------------------------------------------
# Fetching the published export


@dataclass
class FetchResult:
    fetched: list[Path]  # placed in the layout by this call (from the server, or from the local hub cache)
    skipped: list[Path]  # already in place and verified


def _verify(path: Path) -> None:
    """Raise an InputError unless the file is what its name says: a shard's header and size, a tokenizer that loads."""
    if path.suffix == ".bin":
        read_header(path)
    elif path.suffix == ".model":
        load_sentencepiece(path)


def _place(src: Path, dest: Path) -> None:
    """Hard-link (else copy) a file into place through a temporary name, so a file in the layout is always whole."""
    if dest.exists() and os.path.samefile(src, dest):
        return  # already this very file; renaming a hard link onto its twin would silently do nothing
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".partial")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src.resolve(strict=True), tmp)  # hub cache entries are symlinks to their blob: link the blob
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dest)


def _manifest_path(value: Any, what: str) -> str:
    """A path named by the remote manifest, refused if it could land outside the output folder."""
    p = PurePosixPath(str(value))
    if not value or p.is_absolute() or ".." in p.parts:
        raise DownloadError(f"{REMOTE_PREFIX}/manifest.json: {what} {value!r} is not a relative path inside the repo")
    return p.as_posix()


REQUEST_TIMEOUT = 20.0  # seconds without an answer before a request counts as failed
REQUEST_ATTEMPTS = 3


def _probe(url: str, timeout: float, attempts: int) -> None:
    """A HEAD request with a timeout, tried ``attempts`` times with back-off: a server that accepts connections
    and never answers (or refuses them) is a clear error in seconds, not a wait of many minutes inside the hub
    client's own, longer retries."""
    import urllib.error
    import urllib.request

    last = ""
    for i in range(attempts):
        try:
            with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
                return
        except urllib.error.HTTPError:
            return  # the server answers; its status is the hub client's business
        except (OSError, ValueError) as e:
            last = f"{type(e).__name__}: {e}"
        if i + 1 < attempts:
            time.sleep(min(2.0 ** i, 4.0))
    raise DownloadError(f"{url}: no answer after {attempts} attempts of {timeout:.0f} s ({last})")


def fetch_fineweb(variant: str, train_shards: int, out: str | os.PathLike, *, repo_id: str = DEFAULT_REPO_ID,
                  endpoint: str | None = None, cache_dir: str | os.PathLike | None = None,
                  timeout: float = REQUEST_TIMEOUT, attempts: int = REQUEST_ATTEMPTS) -> FetchResult:
    """Fetch one variant of the challenge's export into the challenge's layout under ``out``.

    Files come through the hub cache (``cache_dir``, default $HF_HOME's): huggingface_hub writes each download to a
    temporary file, resumes a body cut off mid-transfer with a Range request from its last whole chunk, and renames
    the file into the cache only when whole (a process killed mid-file starts that file over on the next run). Each
    file is then verified and linked into place. ``endpoint`` defaults to $HF_ENDPOINT, else the public hub.
    Every request has a ``timeout`` (seconds without an answer); the server is probed first (``attempts`` tries), so
    one that never answers is reported within about ``attempts * timeout`` seconds.
    """
    need("huggingface_hub", "pgolf data fineweb")
    from huggingface_hub import constants, hf_hub_download

    if train_shards < 0:
        raise InputError(f"--train-shards {train_shards}: must be >= 0")
    out = Path(out)
    server = endpoint or constants.ENDPOINT

    def download(rel: str, force: bool = False) -> Path:
        remote = f"{REMOTE_PREFIX}/{rel}"
        try:
            return Path(hf_hub_download(repo_id=repo_id, filename=remote, repo_type="dataset", endpoint=endpoint,
                                        cache_dir=cache_dir, force_download=force, etag_timeout=timeout))
        except Exception as e:  # HTTP and transport errors of the hub client (its HTTP library's own types)
            detail = (str(e).strip().splitlines() or [""])[0]
            raise DownloadError(f"fetching {remote} from dataset {repo_id} on {server} failed: "
                                f"{type(e).__name__}: {detail}") from e

    _probe(f"{server.rstrip('/')}/datasets/{repo_id}/resolve/main/{REMOTE_PREFIX}/manifest.json", timeout, attempts)
    # The manifest is always resolved again (a HEAD request; no body unless it changed) so it is never stale.
    cached_manifest = download("manifest.json")
    try:
        manifest = json.loads(cached_manifest.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DownloadError(f"{REMOTE_PREFIX}/manifest.json from dataset {repo_id}: not valid JSON ({e})") from None
    if not isinstance(manifest, dict):
        raise DownloadError(f"{REMOTE_PREFIX}/manifest.json from dataset {repo_id}: not a JSON object")
    _place(cached_manifest, out / "manifest.json")

    name = f"fineweb10B_{variant}"
    datasets = {d.get("name"): d for d in manifest.get("datasets", []) if isinstance(d, dict)}
    if name not in datasets:
        have = sorted(n.removeprefix("fineweb10B_") for n in datasets
                      if isinstance(n, str) and n.startswith("fineweb10B_"))
        raise InputError(f"variant {variant!r} is not in dataset {repo_id} ({REMOTE_PREFIX}/manifest.json has: "
                         f"{', '.join(have) or 'none'}); other variants are published in other repos (--repo-id)")
    entry = datasets[name]
    try:
        n_val, n_train = int(entry["stats"]["files_val"]), int(entry["stats"]["files_train"])
    except (KeyError, TypeError, ValueError):
        raise DownloadError(f"{REMOTE_PREFIX}/manifest.json: {name} has no stats.files_val/files_train") from None
    if train_shards > n_train:
        raise InputError(f"--train-shards {train_shards}: {variant} has only {n_train} train shards in {repo_id}")
    tok = next((t for t in manifest.get("tokenizers", [])
                if isinstance(t, dict) and t.get("name") == entry.get("tokenizer_name")), None)
    if tok is None:
        raise DownloadError(f"{REMOTE_PREFIX}/manifest.json: tokenizer {entry.get('tokenizer_name')!r} of {name} "
                            "is not among its tokenizers")
    tok_files = [_manifest_path(tok[k], f"tokenizer {k}") for k in ("model_path", "vocab_path", "path") if tok.get(k)]
    if not tok_files:
        raise DownloadError(f"{REMOTE_PREFIX}/manifest.json: tokenizer {tok['name']!r} names no files")
    files = ([f"datasets/{name}/fineweb_val_{i:06d}.bin" for i in range(n_val)]
             + [f"datasets/{name}/fineweb_train_{i:06d}.bin" for i in range(train_shards)] + tok_files)

    result = FetchResult(fetched=[], skipped=[])
    for rel in files:
        dest = out / rel
        if dest.is_file():
            try:
                _verify(dest)
                result.skipped.append(dest)
                continue
            except InputError as e:
                print(f"fetching {dest} again: {e}", file=sys.stderr)
        cached = download(rel)
        try:
            _verify(cached)
        except InputError:
            # The layout's files are hard links to the cache's blobs, so a file damaged in place damages its cache
            # copy too: fetch it from the server again (into a new blob) before calling the server's copy bad.
            cached = download(rel, force=True)
            try:
                _verify(cached)
            except InputError as e:
                raise DownloadError(f"{REMOTE_PREFIX}/{rel} from dataset {repo_id} failed verification: {e}") from None
        _place(cached, dest)
        result.fetched.append(dest)
    return result


# ---------------------------------------------------------------------------------------------------------------
# Command line


def cmd_fineweb(args) -> int:
    res = fetch_fineweb(args.variant, args.train_shards, args.out, repo_id=args.repo_id, endpoint=args.endpoint,
                        timeout=args.timeout)
    print(f"{args.variant}: {len(res.fetched)} files fetched, {len(res.skipped)} already in place and verified "
          f"-> {Path(args.out) / 'datasets' / f'fineweb10B_{args.variant}'}")
    return 0


def cmd_tokenizer(args) -> int:
    t = train_tokenizer_from_file(args.input, args.vocab, args.out, args.max_docs, case_ops=args.caseops)
    sp = load_sentencepiece(t.model)
    print(f"wrote {t.model} and {t.model.with_suffix('.vocab')}: vocab {sp.vocab_size()}; trained on "
          f"{t.docs - t.long_docs:,} of {t.docs:,} documents" + (
              f" ({t.long_docs:,} over {MAX_SENTENCE_BYTES:,} bytes, which SentencePiece skips: "
              f"{100 * t.long_bytes / max(t.text_bytes, 1):.0f}% of the text)" if t.long_docs else ""))
    try:
        check_space_piece(sp, str(t.model))
    except InputError as e:
        print(f"warning: {e}", file=sys.stderr)
    return 0


def cmd_build(args) -> int:
    manifest = build_shards(args.input, args.tokenizer, args.out, val_docs=args.val_docs, val_input=args.val_input,
                            shard_tokens=args.shard_tokens, workers=args.workers, case_ops=args.caseops)
    for split, s in manifest["splits"].items():
        per_token = s["text_bytes"] / s["tokens"] if s["tokens"] else float("nan")
        print(f"{split}: {s['docs']:,} docs, {s['tokens']:,} tokens, {s['text_bytes']:,} text bytes "
              f"({per_token:.4f} bytes/token), shards: {len(s['shards'])}"
              + (f", byte sidecars: {len(s['sidecars'])} ({s['sidecar_bytes']:,} original bytes)"
                 if "sidecars" in s else ""))
    print(f"wrote {args.out}/manifest.json")
    return 0


def add_parsers(sub) -> None:
    """Add ``pgolf data {fineweb,tokenizer,build}`` to the ``pgolf`` subcommands."""
    p = sub.add_parser("data", help="fetch the challenge's shards, train a tokenizer, tokenize documents into shards",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    dsub = p.add_subparsers(dest="data_cmd", required=True, metavar="{fineweb,tokenizer,build}")

    f = dsub.add_parser("fineweb", help="download a variant of the challenge's published shards and tokenizer",
                        description="Download all validation shards, the first N train shards and the tokenizer of "
                                    "one variant from the challenge's Hugging Face dataset repo, driven by its "
                                    f"{REMOTE_PREFIX}/manifest.json, into <out>/datasets/fineweb10B_<variant>/ and "
                                    "<out>/tokenizers/. Files in place that verify are skipped, so rerunning after an "
                                    "interruption fetches only what is missing.")
    f.add_argument("--variant", default="sp1024", help="tokenizer variant, e.g. sp1024 (default), sp4096, byte260")
    f.add_argument("--train-shards", type=int, required=True, metavar="N",
                   help="train shards to fetch (the first N, 100M tokens each)")
    f.add_argument("--repo-id", default=DEFAULT_REPO_ID,
                   help=f"dataset repo (default {DEFAULT_REPO_ID}; the challenge's sp4096/sp8192 are in "
                        "kevclark/parameter-golf)")
    f.add_argument("--out", default="data", help="data root (default ./data)")
    f.add_argument("--endpoint", help="hub server URL (default $HF_ENDPOINT, else https://huggingface.co)")
    f.add_argument("--timeout", type=float, default=REQUEST_TIMEOUT, metavar="S",
                   help=f"seconds without an answer before a request fails (default {REQUEST_TIMEOUT:.0f}; "
                        f"{REQUEST_ATTEMPTS} attempts)")
    f.set_defaults(fn=cmd_fineweb)

    t = dsub.add_parser("tokenizer", help="train a SentencePiece BPE tokenizer with the challenge's settings",
                        description="Train a SentencePiece BPE tokenizer with the challenge's settings (byte "
                                    "fallback, split digits, nmt_nfkc, no dummy prefix, pad/bos/eos/unk = 0/1/2/3) "
                                    "on a document file: *.jsonl (the \"text\" field of each line) or *.txt (one "
                                    "document per line), optionally .xz/.gz. Writes PREFIX.model and PREFIX.vocab, "
                                    f"and says how many documents SentencePiece skipped (over {MAX_SENTENCE_BYTES:,} "
                                    "bytes).")
    t.add_argument("--input", required=True, metavar="DOCS", help="document file")
    t.add_argument("--vocab", type=int, required=True, metavar="N", help="vocabulary size")
    t.add_argument("--out", required=True, metavar="PREFIX", help="output prefix, e.g. tokenizers/fineweb_1024_bpe")
    t.add_argument("--max-docs", type=int, default=0, metavar="K",
                   help="train on the first K documents only (default: all)")
    t.add_argument("--caseops", action="store_true",
                   help="train on the CaseOps case transform of the text, its operators as pieces of their own")
    t.set_defaults(fn=cmd_tokenizer)

    b = dsub.add_parser("build", help="tokenize documents into challenge shards",
                        description="Frame each document as [BOS] + tokens (no EOS) and write fineweb_val_*.bin / "
                                    "fineweb_train_*.bin shards and a manifest.json into DIR, encoding on all cores. "
                                    "Validation is the first --val-docs documents of --input, or all of --val-input. "
                                    "Document files: *.jsonl or *.txt, optionally .xz/.gz.")
    b.add_argument("--input", required=True, metavar="DOCS", help="document file (train, and val with --val-docs)")
    b.add_argument("--tokenizer", required=True, metavar="MODEL", help="SentencePiece .model")
    b.add_argument("--out", required=True, metavar="DIR", help="output folder (an earlier build there is replaced)")
    val = b.add_mutually_exclusive_group(required=True)
    val.add_argument("--val-docs", type=int, metavar="N", help="the first N documents of --input are validation")
    val.add_argument("--val-input", metavar="FILE", help="validation documents from a separate file")
    b.add_argument("--shard-tokens", type=int, default=SHARD_TOKENS, metavar="N",
                   help=f"tokens per shard (default {SHARD_TOKENS:,}, the challenge's)")
    b.add_argument("--workers", type=int, default=0, metavar="K", help="encoding processes (default: all cores)")
    b.add_argument("--caseops", action="store_true",
                   help="tokenize the CaseOps transform of the text (a --caseops tokenizer) and write a byte sidecar "
                        "of original bytes beside each val shard")
    b.set_defaults(fn=cmd_build)
