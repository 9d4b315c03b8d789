"""The challenge shard format, the streaming train loader and the validation tokens.

A shard is 256 little-endian int32 (magic 20240520, version 1, token count, zeros) followed by that many
little-endian uint16 tokens. Documents are framed ``[BOS] + tokens`` with no EOS.

A byte sidecar (a CaseOps build, see caseops.py) has the same format and one uint16 per token of its validation
shard: the original text's bytes that token stands for. ``fineweb_val_bytes_000000.bin`` is the sidecar of
``fineweb_val_000000.bin`` (the records' naming); when the validation shards have sidecars, every eval mode takes
its bytes from them instead of the tokenizer's byte table.
"""

from __future__ import annotations

import glob
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .config import Config, InputError
from .files import atomic_write, sha256_file
from .tokenizer import (ByteTable, build_byte_table, check_space_piece, is_caseops, load_sentencepiece,
                        target_bytes)

SHARD_MAGIC = 20240520
SHARD_VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4


class ShardError(InputError):
    """A shard file is malformed; the message names the file."""


def write_shard(path: str | os.PathLike, tokens) -> None:
    """Write tokens (any int array, values < 65536) as a challenge shard, atomically."""
    arr = np.asarray(tokens)
    if arr.size and (arr.min() < 0 or arr.max() >= 2**16):
        raise ValueError(f"{path}: token ids must be in [0, 65535] to fit uint16")
    if arr.size >= 2**31:
        raise ValueError(f"{path}: too many tokens for one shard ({arr.size})")
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[0], header[1], header[2] = SHARD_MAGIC, SHARD_VERSION, arr.size

    def write(f) -> None:
        f.write(header.tobytes())
        f.write(arr.astype("<u2", copy=False).tobytes())

    atomic_write(path, write)


def read_header(path: str | os.PathLike) -> int:
    """Validate a shard's header and size; return its token count."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ShardError(f"{path}: no such shard") from None
    if size < HEADER_BYTES:
        raise ShardError(f"{path}: truncated header ({size} bytes, need {HEADER_BYTES})")
    header = np.fromfile(path, dtype="<i4", count=HEADER_INTS)
    if int(header[0]) != SHARD_MAGIC:
        raise ShardError(f"{path}: bad magic {int(header[0])} (expected {SHARD_MAGIC}); not a challenge shard")
    if int(header[1]) != SHARD_VERSION:
        raise ShardError(f"{path}: unsupported shard version {int(header[1])} (expected {SHARD_VERSION})")
    n = int(header[2])
    if n < 0:
        raise ShardError(f"{path}: negative token count {n}")
    expected = HEADER_BYTES + 2 * n
    if size != expected:
        what = "truncated" if size < expected else "trailing bytes"
        raise ShardError(f"{path}: size {size} != {expected} for {n} tokens ({what})")
    return n


def read_shard(path: str | os.PathLike, mmap: bool = False) -> np.ndarray:
    """Return a shard's tokens as uint16 (a read-only memory map when ``mmap``)."""
    n = read_header(path)
    if mmap:
        return np.memmap(path, dtype="<u2", mode="r", offset=HEADER_BYTES, shape=(n,))
    arr = np.fromfile(path, dtype="<u2", count=n, offset=HEADER_BYTES)
    if arr.size != n:
        raise ShardError(f"{path}: short read ({arr.size} of {n} tokens)")
    return arr


_NUMBERED = re.compile(r"^(.*_)(\d+\.bin)$")
_SIDECAR = re.compile(r"_bytes_\d+\.bin$")


def sidecar_path(shard: str | os.PathLike) -> Path:
    """The byte sidecar of a shard: ``fineweb_val_000000.bin`` -> ``fineweb_val_bytes_000000.bin``."""
    shard = Path(shard)
    m = _NUMBERED.match(shard.name)
    if not m:
        raise ValueError(f"{shard}: not a numbered shard name (..._NNNNNN.bin)")
    return shard.with_name(f"{m.group(1)}bytes_{m.group(2)}")


def is_sidecar(path: str | os.PathLike) -> bool:
    return bool(_SIDECAR.search(Path(path).name))


def list_shards(folder: str | os.PathLike, pattern: str) -> list[Path]:
    files = [Path(p) for p in sorted(glob.glob(os.path.join(str(folder), pattern)))]
    if not files:
        raise FileNotFoundError(f"no shards match {os.path.join(str(folder), pattern)}")
    return files


def load_tokens(files: list[Path], max_tokens: int = 0) -> torch.Tensor:
    """Concatenate whole shards (the validation split) as an int32 tensor."""
    arrs = [read_shard(f) for f in files]
    arr = np.concatenate(arrs) if len(arrs) > 1 else arrs[0]
    if max_tokens:
        arr = arr[:max_tokens]
    return torch.from_numpy(arr.astype(np.int32))


class TokenStream:
    """Reads shards in order (memory-mapped) and wraps around forever."""

    def __init__(self, files: list[Path]):
        if not files:
            raise FileNotFoundError("TokenStream needs at least one shard")
        if sum(read_header(f) for f in files) == 0:  # fail fast on any bad shard, before training starts
            raise ShardError(f"{files[0].parent}: the train shards hold no tokens")
        self.files = files
        self.file_idx = 0
        self.tokens = read_shard(files[0], mmap=True)
        self.pos = 0

    def take(self, n: int) -> np.ndarray:
        out = np.empty(n, dtype=np.uint16)
        filled = 0
        while filled < n:
            avail = self.tokens.size - self.pos
            if avail <= 0:
                self.file_idx = (self.file_idx + 1) % len(self.files)
                self.tokens = read_shard(self.files[self.file_idx], mmap=True)
                self.pos = 0
                continue
            k = min(n - filled, avail)
            out[filled:filled + k] = self.tokens[self.pos:self.pos + k]
            self.pos += k
            filled += k
        return out

    def state_dict(self) -> dict:
        return {"file_idx": self.file_idx, "pos": self.pos, "files": [str(f) for f in self.files]}

    def load_state_dict(self, st: dict) -> None:
        if [Path(f).name for f in st["files"]] != [Path(f).name for f in self.files]:
            raise ValueError(f"the checkpoint read shards {st['files']}, this run has {[str(f) for f in self.files]}")
        self.file_idx = st["file_idx"]
        self.tokens = read_shard(self.files[self.file_idx], mmap=True)
        self.pos = st["pos"]


class DistributedTokenLoader:
    """Each micro-step takes one contiguous span for all ranks; rank r gets the r-th slice of it.

    The spans of different ranks never overlap, and the token order is the same for any world size with the
    same global batch: a 1-process run with accumulation k sees exactly the tokens a k-process run sees.
    On CUDA the span goes through a reused pinned int32 buffer in one asynchronous copy (x and y are views of it,
    cast on the GPU), so a step costs the host one memcpy of its tokens and no allocation.
    """

    def __init__(self, files: list[Path], rank: int, world_size: int, device: torch.device):
        self.rank, self.world_size, self.device = rank, world_size, device
        self.stream = TokenStream(files)
        self._pinned: list[torch.Tensor] = []
        self._turn = 0

    def next_batch(self, local_tokens: int, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        span = local_tokens + 1
        chunk = self.stream.take(span * self.world_size)
        local = chunk[self.rank * span:(self.rank + 1) * span]
        if self.device.type != "cuda":
            t = torch.from_numpy(local.astype(np.int64))
            return t[:-1].reshape(-1, seq_len), t[1:].reshape(-1, seq_len)
        if not self._pinned or self._pinned[0].numel() != span:
            # a few buffers in turn: the copy out of one may still be in flight while the next is filled
            self._pinned = [torch.empty(span, dtype=torch.int32).pin_memory() for _ in range(4)]
            self._copied = [None] * len(self._pinned)
        i = self._turn % len(self._pinned)
        self._turn += 1
        if self._copied[i] is not None:
            self._copied[i].synchronize()  # the last copy out of this buffer is done (waits only far ahead)
        buf = self._pinned[i]
        buf.numpy()[:] = local
        t = buf.to(self.device, non_blocking=True)
        self._copied[i] = torch.cuda.Event()
        self._copied[i].record()
        t = t.long()
        return t[:-1].view(-1, seq_len), t[1:].view(-1, seq_len)

    def state_dict(self) -> dict:
        return self.stream.state_dict()

    def load_state_dict(self, st: dict) -> None:
        self.stream.load_state_dict(st)


def challenge_data_dir(vocab_size: int = 1024) -> Path | None:
    """./data/datasets/fineweb10B_spN (the challenge's layout, as `pgolf data fineweb` writes it), if it holds
    validation shards."""
    d = Path("data/datasets") / f"fineweb10B_sp{vocab_size or 1024}"
    return d if d.is_dir() and any(d.glob("fineweb_val_*.bin")) else None


def find_tokenizer(data_dir: str | os.PathLike) -> Path:
    """Locate the SentencePiece model for a shard folder.

    Looks in the folder itself, then at the tokenizer the folder's ``manifest.json`` names (``pgolf data build``
    records its path and sha256; used only while the file there still has that sha256), then in the challenge
    layout (``data/datasets/fineweb10B_spN`` next to ``data/tokenizers/fineweb_N_bpe.model``) and one level higher
    (``shared/data/golfbench_spN`` next to ``shared/tokenizers``).
    """
    d = Path(data_dir).resolve()
    own = sorted(d.glob("*.model"))
    if len(own) == 1:
        return own[0]
    built = _manifest(d)
    named = Path(built["tokenizer"]) if isinstance(built.get("tokenizer"), str) else None
    if named is not None and named.is_file() and sha256_file(named) == built.get("tokenizer_sha256"):
        return named
    m = re.search(r"sp(\d+)", d.name)
    candidates = []
    if m:
        v = m.group(1)
        for up in (d.parent, d.parent.parent, d.parent.parent.parent):
            candidates.append(up / "tokenizers" / f"fineweb_{v}_bpe.model")
    for c in candidates:
        if c.is_file():
            return c
    looked = [str(d / "*.model")] + [str(c) for c in candidates]
    raise FileNotFoundError(f"no tokenizer found for {d}; looked at {looked}. Pass --tokenizer PATH "
                            "(or --set data.tokenizer=PATH)")


# ---------------- the data a run reads, resolved and checked before the clock starts ----------------

ROUNDTRIP_DOCS = 64  # documents the tokenizer round trip reads (about 0.1 s) ...
ROUNDTRIP_TOKENS = 2_000_000  # ... among the first tokens of the first validation shard


def resolve_data(cfg: Config, log) -> tuple[Path, Path, bool]:
    """(data folder, tokenizer, is_embedded). Order: data.path, $PGOLF_DATA, ./data/datasets/fineweb10B_spN (the
    challenge's layout, when present), the embedded corpus."""
    path = cfg.data.path or os.environ.get("PGOLF_DATA", "")
    if path:
        d = Path(path)
        if not d.is_dir():
            raise InputError(f"data folder not found: {d}")
        tok = Path(cfg.data.tokenizer) if cfg.data.tokenizer else find_tokenizer(d)
        return d, tok, False
    local = challenge_data_dir(cfg.model.vocab_size)
    if local is not None:
        tok = Path(cfg.data.tokenizer) if cfg.data.tokenizer else find_tokenizer(local)
        return local, tok, False
    from .embedded import ensure_embedded

    d = ensure_embedded(log)
    tok = Path(cfg.data.tokenizer) if cfg.data.tokenizer else d / "embedded.model"
    return d, tok, True


@dataclass
class DataSet:
    """What a run reads: shards, tokenizer and byte table, and the record of what was checked about them."""

    folder: Path
    tokenizer: Path
    tokenizer_sha256: str
    embedded: bool
    vocab_size: int
    table: ByteTable
    train_files: list[Path]
    val_files: list[Path]
    val_tokens: torch.Tensor
    val_bytes: torch.Tensor  # (N,) int32: the bytes of each val position as a target (tokenizer.target_bytes)
    byte_source: str  # where val_bytes came from: the byte table, or the byte sidecars of the original text
    checks: list[str] = field(default_factory=list)


def shard_max_ids(files: list[Path], rank: int = 0, world: int = 1, group=None) -> list[int]:
    """The largest token id of every shard (-1 for an empty one), each rank reading every world-th shard; with a
    process group the results are combined (MAX) so every rank holds all of them. A vectorised max over a
    memory map: about a second per 100M-token shard."""
    out = torch.full((len(files),), -2, dtype=torch.int64)
    for i in range(rank, len(files), world):
        t = read_shard(files[i], mmap=True)
        out[i] = int(t.max()) if t.size else -1
    if group is not None:
        import torch.distributed as dist

        dist.all_reduce(out, op=dist.ReduceOp.MAX, group=group)
    return out.tolist()


def _manifest_fingerprint(folder: Path) -> tuple[str | None, str]:
    """The sha256 of the tokenizer the shards were built with, when a manifest records it: our builds' own
    manifest.json, or the challenge download's (``data/manifest.json`` names the tokenizer file of each variant).
    Returns (sha256 or None, where it came from)."""
    own = folder / "manifest.json"
    if own.is_file():
        try:
            m = json.loads(own.read_text())
        except (OSError, json.JSONDecodeError):
            m = {}
        if isinstance(m, dict) and m.get("tokenizer_sha256"):
            return m["tokenizer_sha256"], str(own)
    root = folder.parent.parent  # data/datasets/fineweb10B_spN -> data/
    dl = root / "manifest.json"
    if folder.parent.name == "datasets" and dl.is_file():
        try:
            m = json.loads(dl.read_text())
            entry = next(d for d in m.get("datasets", []) if d.get("name") == folder.name)
            tok = next(t for t in m.get("tokenizers", []) if t.get("name") == entry.get("tokenizer_name"))
            model = root / tok["model_path"]
        except (OSError, json.JSONDecodeError, StopIteration, KeyError, TypeError, AttributeError):
            return None, ""
        if model.is_file():
            return sha256_file(model), f"{dl} ({tok['model_path']})"
    return None, ""


def _manifest(folder: Path) -> dict:
    try:
        m = json.loads((folder / "manifest.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return m if isinstance(m, dict) else {}


def load_sidecars(val_files: list[Path], manifest: dict, caseops_tokenizer: bool) -> np.ndarray | None:
    """The byte sidecars of the validation shards, concatenated (uint16), or None when there are none (then the
    byte table counts). Each must be a valid shard with exactly its shard's token count and, where the manifest
    records one, its sha256. A build that says it transformed the text (or a CaseOps tokenizer) without sidecars
    is refused: the byte table would count the transformed text's bytes (#2138). Raises one InputError naming the
    file."""
    paths = [sidecar_path(f) for f in val_files]
    have = [p.is_file() for p in paths]
    transform = manifest.get("transform")
    if not any(have):
        if transform or caseops_tokenizer:
            why = f"{val_files[0].parent / 'manifest.json'} records the transform {transform}" if transform else \
                "the tokenizer is a CaseOps tokenizer"
            raise InputError(f"{paths[0]}: missing ({why}); without the byte sidecars of the original text the byte "
                             "table would count the transformed text's bytes (challenge issue #2138)")
        return None
    if not all(have):
        raise InputError(f"{paths[have.index(False)]}: missing, though other validation shards have byte sidecars")
    recorded = {d.get("file"): d.get("sha256") for d in (manifest.get("byte_sidecar") or {}).get("files", [])
                if isinstance(d, dict)}
    out = []
    for f, p in zip(val_files, paths):
        n, want = read_header(p), read_header(f)
        if n != want:
            raise InputError(f"{p}: {n:,} byte counts for the {want:,} tokens of {f.name} (a sidecar of another "
                             "build?)")
        if recorded.get(p.name) and recorded[p.name] != sha256_file(p):
            raise InputError(f"{p}: sha256 {sha256_file(p)[:12]} is not the {recorded[p.name][:12]} the manifest "
                             "records")
        out.append(read_shard(p))
    return np.concatenate(out) if len(out) > 1 else out[0]


def tokenizer_roundtrip(sp, tokens: torch.Tensor | np.ndarray, bos_id: int, max_docs: int = ROUNDTRIP_DOCS
                        ) -> tuple[int, int]:
    """(documents that decode and re-encode to the very same ids, documents tried), over the first documents of
    ``tokens`` made only of ordinary pieces (byte-fallback and control pieces may not round-trip even with the right
    tokenizer). With the tokenizer the shards were made with, all of them match; with another (the sp4096 one on
    sp1024 shards, say) none do, although its byte table would score them."""
    arr = np.asarray(tokens)
    V = int(sp.vocab_size())
    special = np.array([sp.is_byte(i) or sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i) for i in range(V)])
    bos = np.flatnonzero(arr == bos_id)
    tried = same = 0
    for a, b in zip(bos, list(bos[1:]) + [arr.size]):
        ids = arr[a + 1:b]
        if ids.size == 0 or int(ids.max()) >= V or special[ids].any():
            continue
        ids = ids.tolist()
        tried += 1
        same += sp.encode(sp.decode(ids)) == ids
        if tried >= max_docs:
            break
    return same, tried


def prepare_data(cfg: Config, log, rank: int = 0, world: int = 1, group=None, train: bool = True) -> DataSet:
    """Resolve the shards and tokenizer of ``cfg`` and check everything that could make a run fail late or score
    wrong, before the clock starts: every shard's header and size, no empty shard, every token id (of every shard)
    below the vocabulary, the tokenizer the shards were built with (fingerprint from a manifest where there is one;
    always a decode/re-encode round trip of validation documents), and validation tokens that carry text bytes.
    Raises one InputError naming the file; sets ``cfg.model.vocab_size`` (when 0) and ``cfg.data`` paths. With
    ``train=False`` (scoring an artifact) the train shards are not read."""
    data_dir, tok_path, embedded = resolve_data(cfg, log)
    sp = load_sentencepiece(tok_path)
    check_space_piece(sp, str(tok_path))
    V = int(sp.vocab_size())
    if cfg.model.vocab_size == 0:
        cfg.model.vocab_size = V
    elif cfg.model.vocab_size != V:
        raise InputError(f"vocab mismatch: model.vocab_size={cfg.model.vocab_size} but tokenizer {tok_path} has {V} "
                         "pieces (set model.vocab_size=0 to take it from the tokenizer)")
    cfg.data.path, cfg.data.tokenizer = str(data_dir), str(tok_path)
    fingerprint = sha256_file(tok_path)
    checks = [f"tokenizer {tok_path.name} sha256 {fingerprint[:12]}"]
    val_files = [f for f in list_shards(data_dir, cfg.data.val_glob) if not is_sidecar(f)]
    if not val_files:
        raise FileNotFoundError(f"no shards match {data_dir / cfg.data.val_glob} (only byte sidecars)")
    train_files = list_shards(data_dir, cfg.data.train_glob) if train else []
    files = val_files + train_files
    for f in files:
        if read_header(f) == 0:
            raise ShardError(f"{f}: holds 0 tokens")
    top = shard_max_ids(files, rank, world, group)
    for f, m in zip(files, top):
        if m >= V:
            raise ShardError(f"{f}: token id {m} >= vocab size {V} of tokenizer {tok_path} (shards and tokenizer "
                             "do not match)")
    checks.append(f"{len(files)} shards: ids < {V}")
    expected, source = _manifest_fingerprint(data_dir)
    if expected is not None:
        if expected != fingerprint:
            raise InputError(f"{tok_path}: not the tokenizer the shards in {data_dir} were built with (sha256 "
                             f"{fingerprint[:12]}, {source} says {expected[:12]}); pass the right --tokenizer")
        checks.append(f"fingerprint matches {source}")
    else:
        checks.append("no manifest with a tokenizer fingerprint")
    val_tokens = load_tokens(val_files, cfg.eval.max_tokens)
    if val_tokens.numel() < 2:
        raise ShardError(f"{val_files[0]}: fewer than 2 validation tokens")
    same, tried = tokenizer_roundtrip(sp, read_shard(val_files[0], mmap=True)[:ROUNDTRIP_TOKENS], cfg.model.bos_id)
    if same < math.ceil(0.9 * tried):
        raise InputError(f"{tok_path}: does not reproduce the validation tokens of {data_dir} ({same} of {tried} "
                         "documents decode and re-encode to the same ids; the right tokenizer gives all): the shards "
                         "were made with another tokenizer. Pass the right --tokenizer")
    checks.append(f"round trip {same}/{tried} val documents" if tried else
                  "round trip not checkable (no validation document of plain pieces)")
    table = build_byte_table(sp, V)
    sidecars = load_sidecars(val_files, _manifest(data_dir), is_caseops(sp))
    if sidecars is None:
        val_bytes = target_bytes(table, val_tokens)
        byte_source = f"byte table of {tok_path.name}"
    else:
        val_bytes = torch.from_numpy(sidecars[:val_tokens.numel()].astype(np.int32))
        byte_source = (f"byte sidecars of the original text ({', '.join(sidecar_path(f).name for f in val_files[:2])}"
                       f"{', ...' if len(val_files) > 2 else ''})")
        checks.append(f"{len(val_files)} byte sidecar(s): one count per val token")
    if int(val_bytes[1:].sum()) <= 0:
        raise ShardError(f"{val_files[0]}: the validation tokens hold no text bytes (only empty documents?); "
                         "val_bpb would be undefined")
    return DataSet(data_dir, tok_path, fingerprint, embedded, V, table, train_files, val_files, val_tokens, val_bytes,
                   byte_source, checks)
