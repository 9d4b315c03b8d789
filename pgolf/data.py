"""The challenge shard format, the streaming train loader and the validation tokens.

A shard is 256 little-endian int32 (magic 20240520, version 1, token count, zeros) followed by that many
little-endian uint16 tokens. Documents are framed ``[BOS] + tokens`` with no EOS.
"""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path

import numpy as np
import torch

from .config import InputError

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
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(header.tobytes())
        f.write(arr.astype("<u2", copy=False).tobytes())
    os.replace(tmp, path)


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


def check_vocab(tokens: torch.Tensor, vocab_size: int, source: str) -> None:
    if tokens.numel() and int(tokens.max()) >= vocab_size:
        raise ShardError(f"{source}: token id {int(tokens.max())} >= vocab size {vocab_size} "
                         "(vocab mismatch between the shards and the tokenizer/model)")


class TokenStream:
    """Reads shards in order (memory-mapped) and wraps around forever."""

    def __init__(self, files: list[Path]):
        if not files:
            raise FileNotFoundError("TokenStream needs at least one shard")
        for f in files:
            read_header(f)  # fail fast on any bad shard, before training starts
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
    """

    def __init__(self, files: list[Path], rank: int, world_size: int, device: torch.device):
        self.rank, self.world_size, self.device = rank, world_size, device
        self.stream = TokenStream(files)

    def next_batch(self, local_tokens: int, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        span = local_tokens + 1
        chunk = self.stream.take(span * self.world_size)
        local = torch.from_numpy(chunk[self.rank * span:(self.rank + 1) * span].astype(np.int64))
        x = local[:-1].reshape(-1, seq_len)
        y = local[1:].reshape(-1, seq_len)
        if self.device.type == "cuda":
            return x.pin_memory().to(self.device, non_blocking=True), y.pin_memory().to(self.device, non_blocking=True)
        return x.to(self.device), y.to(self.device)

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

    Looks in the folder itself, then in the challenge layout (``data/datasets/fineweb10B_spN`` next to
    ``data/tokenizers/fineweb_N_bpe.model``) and one level higher (``shared/data/golfbench_spN`` next to
    ``shared/tokenizers``).
    """
    d = Path(data_dir).resolve()
    own = sorted(d.glob("*.model"))
    if len(own) == 1:
        return own[0]
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
