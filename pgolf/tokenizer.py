"""SentencePiece loading and the byte table behind val_bpb, built exactly as the challenge builds it.

Per scored position (prev = input token, tgt = target token):
    bytes = base_bytes[tgt] + (has_leading_space[tgt] and not is_boundary[prev])
Control/unknown/unused tokens: 0 bytes and a boundary; byte-fallback tokens ``<0xNN>``: 1 byte; other pieces:
their UTF-8 length without a leading "▁", which counts as one byte unless the previous token is a boundary.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from .config import InputError

# The CaseOps operators (TITLE, ALLCAPS, CAPNEXT, ESC; pgolf/caseops.py), here so that recognising a CaseOps
# tokenizer does not pack the transform into train_gpt.py (training never runs it)
CASE_OPERATORS = ("\ue000", "\ue001", "\ue002", "\ue003")


def load_sentencepiece(path: str | os.PathLike):
    import sentencepiece as spm

    path = str(path)
    if not os.path.isfile(path):
        raise InputError(f"tokenizer not found: {path}")
    if not path.endswith(".model"):
        raise InputError(f"{path}: expected a SentencePiece .model file")
    sp = spm.SentencePieceProcessor()
    try:
        sp.Load(path)
    except Exception as e:  # sentencepiece raises OSError/RuntimeError with little context
        raise InputError(f"{path}: not a valid SentencePiece model ({e})") from None
    return sp


@dataclass
class ByteTable:
    base_bytes: torch.Tensor  # (V,) int16
    has_leading_space: torch.Tensor  # (V,) bool
    is_boundary: torch.Tensor  # (V,) bool

    def to(self, device) -> "ByteTable":
        return ByteTable(self.base_bytes.to(device), self.has_leading_space.to(device), self.is_boundary.to(device))

    def count(self, prev: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        """Bytes of each target token given its previous token (same shapes), as float64."""
        b = self.base_bytes[tgt].to(torch.float64)
        return b + (self.has_leading_space[tgt] & ~self.is_boundary[prev]).to(torch.float64)

    @property
    def vocab_size(self) -> int:
        return int(self.base_bytes.numel())


def target_bytes(source: "ByteTable | torch.Tensor", tokens: torch.Tensor) -> torch.Tensor:
    """The bytes each position of ``tokens`` stands for as a target, (N,) int32 on ``tokens``' device: from a byte
    table (position i: ``count(tokens[i-1], tokens[i])``; position 0 is never a target, 0), or ``source`` itself
    when it already holds them (a byte sidecar of the original text, one count per token). Every eval mode sums this
    over the targets it scores, so the two sources share one code path."""
    if not isinstance(source, ByteTable):
        if source.shape != tokens.shape:
            raise ValueError(f"{tuple(source.shape)} byte counts for {tuple(tokens.shape)} tokens")
        return source.to(device=tokens.device, dtype=torch.int32)
    table, toks = source.to(tokens.device), tokens.long()
    out = torch.zeros(toks.numel(), dtype=torch.int32, device=tokens.device)
    step = 1 << 23  # float64 counts of 8M positions at a time
    for a in range(1, toks.numel(), step):
        b = min(a + step, toks.numel())
        out[a:b] = table.count(toks[a - 1:b - 1], toks[a:b]).to(torch.int32)
    return out


def build_byte_table(sp, vocab_size: int = 0) -> ByteTable:
    sp_vocab = int(sp.vocab_size())
    size = max(sp_vocab, vocab_size)
    base = np.zeros(size, dtype=np.int16)
    space = np.zeros(size, dtype=np.bool_)
    boundary = np.ones(size, dtype=np.bool_)
    for tid in range(sp_vocab):
        if sp.is_control(tid) or sp.is_unknown(tid) or sp.is_unused(tid):
            continue
        boundary[tid] = False
        if sp.is_byte(tid):
            base[tid] = 1
            continue
        piece = sp.id_to_piece(tid)
        if piece.startswith("\u2581"):
            space[tid] = True
            piece = piece[1:]
        base[tid] = len(piece.encode("utf-8"))
    return ByteTable(torch.from_numpy(base), torch.from_numpy(space), torch.from_numpy(boundary))


def is_caseops(sp) -> bool:
    """Whether a SentencePiece model has the CaseOps operators as pieces of their own."""
    return all(sp.piece_to_id(o) != sp.unk_id() and sp.id_to_piece(sp.piece_to_id(o)) == o for o in CASE_OPERATORS)


def check_space_piece(sp, path: str = "") -> None:
    """The byte table needs "▁" as its own piece, or a leading space is charged as 3 fallback bytes (issue #897)."""
    if sp.piece_to_id("\u2581") == sp.unk_id():
        raise InputError(f"{path or 'tokenizer'}: has no standalone '\u2581' piece; its byte table would "
                         "over-count spaces (challenge issue #897)")


MAX_SENTENCE_BYTES = 16384  # SentencePiece skips a training text longer than this (its max_sentence_length)


class TrainedTokenizer(NamedTuple):
    model: Path
    docs: int  # the (non-empty) texts SentencePiece was given
    long_docs: int  # of them, those over max_sentence_length bytes, which it skipped
    text_bytes: int  # UTF-8 bytes of those texts
    long_bytes: int  # of them, the skipped texts'


def train_tokenizer(texts, vocab_size: int, model_prefix: str, *, max_sentence_length: int = MAX_SENTENCE_BYTES,
                    input_sentence_size: int = 0, num_threads: int = 0, user_defined_symbols: tuple[str, ...] = ()
                    ) -> TrainedTokenizer:
    """Train a SentencePiece BPE tokenizer with the challenge's settings (data/download_hf_docs_and_tokenize.py):
    byte fallback, split digits, nmt_nfkc, no dummy prefix, pad/bos/eos/unk = 0/1/2/3; ``user_defined_symbols``
    (the CaseOps operators) become pieces of their own, ids 4, 5, ... SentencePiece skips a text over
    ``max_sentence_length`` UTF-8 bytes without a word: the result counts them."""
    import sentencepiece as spm

    counts = [0, 0, 0, 0]  # docs, long_docs, text_bytes, long_bytes

    def clean():
        for t in texts:
            t = t.replace("\x00", " ").strip()  # the challenge's exporter
            if t:
                n = len(t.encode("utf-8"))
                long = n > max_sentence_length
                counts[0] += 1
                counts[1] += long
                counts[2] += n
                counts[3] += n * long
                yield t

    kwargs = dict(
        sentence_iterator=clean(), model_prefix=model_prefix, model_type="bpe", vocab_size=vocab_size,
        character_coverage=0.999, byte_fallback=True, split_digits=True, normalization_rule_name="nmt_nfkc",
        add_dummy_prefix=False, pad_id=0, bos_id=1, eos_id=2, unk_id=3, hard_vocab_limit=False,
        max_sentence_length=max_sentence_length, num_threads=num_threads or (os.cpu_count() or 1),
        minloglevel=2,
    )
    if user_defined_symbols:
        kwargs.update(user_defined_symbols=list(user_defined_symbols))
    if input_sentence_size:
        kwargs.update(input_sentence_size=input_sentence_size, shuffle_input_sentence=True)
    spm.SentencePieceTrainer.train(**kwargs)
    return TrainedTokenizer(Path(model_prefix + ".model"), *counts)
