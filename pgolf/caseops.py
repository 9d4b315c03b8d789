"""CaseOps: a lossless case transform of text, and the byte sidecar that keeps val_bpb on the original bytes.

    pgolf data tokenizer --caseops --input docs.jsonl.xz --vocab 8192 --out tok_caseops
    pgolf data build --caseops --input docs.jsonl.xz --val-docs 50000 --tokenizer tok_caseops.model --out DIR

The tokenizer sees a lowercase lexical stream; capitals become operator symbols (private-use characters, one
SentencePiece user-defined piece each), so "The" and "the" share their pieces (PR #1729 of the challenge):

    TITLE    U+E000  the next character is upper case ("The" -> TITLE "the"; "iPhone" -> "i" CAPNEXT "phone")
    ALLCAPS  U+E001  every following character that has an upper case partner is upper case ("NASA" -> ALLCAPS "nasa")
    CAPNEXT  U+E002  as TITLE, inside a word (the decoder treats both alike; the encoder picks by position)
    ESC      U+E003  the next character is literal (an operator character of the input itself)

An operator in front of a word that follows one whitespace character is written before that whitespace
(" The" -> TITLE " the"), so SentencePiece keeps "▁the" as one piece; the decoder puts it back.

Only characters whose case maps one-to-one are transformed (``c.lower()`` one character whose ``upper()`` is ``c``
again, and its partner the other way round); the others pass through as they are ('ß', 'ẞ', 'İ', final 'ς',
'ǅ', the Kelvin sign), so ``decode(encode(s)) == s`` for every string. The case tables come from Python's
``unicodedata`` (recorded in a build's manifest): decode with the Python version that encoded.

The score divides by the ORIGINAL text's bytes (#2138: a transform divided by transformed bytes is wrong): the
build writes, beside each validation shard, a sidecar in the shard format holding each token's count of original
UTF-8 bytes (``fineweb_val_bytes_NNNNNN.bin`` beside ``fineweb_val_NNNNNN.bin``, the records' naming). Every
character of the transformed text carries the original bytes it stands for (an operator 0, a lowered capital its
capital's UTF-8 length, anything else its own), and each character is charged to the token whose span (from
SentencePiece's offset mapping into the transformed text) holds it; one that normalisation dropped (extra
whitespace) goes to the nearest token that holds original bytes of its own, before it if any; BOS carries 0. So a document's sidecar sum is
exactly ``len(original.encode("utf-8"))``, whatever NFKC did to the pieces.
"""

from __future__ import annotations

import functools
import re
import sys
import unicodedata

import numpy as np

from .tokenizer import CASE_OPERATORS as OPERATORS
from .tokenizer import is_caseops  # noqa: F401  (part of this module's interface)

NAME = "caseops-v1"
TITLE, ALLCAPS, CAPNEXT, ESC = OPERATORS  # SentencePiece user-defined symbols, ids 4..7 after pad/bos/eos/unk
_OPERATOR = re.compile("[\ue000-\ue003]")


def _upper_with_partner(c: str) -> bool:
    """An upper-case character whose lower case is one character mapping back to it (the ones transformed)."""
    lo = c.lower()
    return len(lo) == 1 and lo != c and lo.upper() == c


@functools.lru_cache(maxsize=1)
def _tables() -> tuple[re.Pattern, frozenset[str]]:
    """(pattern of an operator character or a run of transformable capitals, their lower-case partners)."""
    upper = [chr(i) for i in range(sys.maxunicode + 1)
             if not 0xD800 <= i < 0xE000 and _upper_with_partner(chr(i))]
    lower = frozenset(c.lower() for c in upper)
    ranges, start = [], None
    codes = [ord(c) for c in upper]
    for k, i in enumerate(codes):  # compact the character class into ranges
        if start is None:
            start = i
        if k + 1 == len(codes) or codes[k + 1] != i + 1:
            ranges.append(re.escape(chr(start)) + ("-" + re.escape(chr(i)) if i > start else ""))
            start = None
    ops = "".join(re.escape(o) for o in OPERATORS)
    return re.compile(f"([{ops}])|([{''.join(ranges)}]+)"), lower


def unicode_version() -> str:
    return unicodedata.unidata_version


def _utf8_lengths(text: str) -> np.ndarray:
    """UTF-8 length of every character, (len(text),) int64."""
    cp = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")
    return 1 + (cp >= 0x80) + (cp >= 0x800) + (cp >= 0x10000).astype(np.int64)


def encode_with_bytes(text: str) -> tuple[str, np.ndarray]:
    """(transformed text, original UTF-8 bytes each of its characters stands for), the latter summing to
    ``len(text.encode("utf-8"))``."""
    pattern, lower = _tables()
    out: list[str] = []
    n_out = 0  # characters in ``out``
    fix: list[tuple[int, int]] = []  # (position in the output, original bytes) where not the character's own
    pos = 0

    def put(s: str) -> None:
        nonlocal n_out
        out.append(s)
        n_out += len(s)

    def op(o: str, at: int) -> None:
        """Operator for the capital at input position ``at``: before one whitespace character that precedes it."""
        nonlocal n_out
        if at > 0 and text[at - 1].isspace() and out and out[-1] and out[-1][-1] == text[at - 1]:
            ws = out[-1][-1]
            out[-1] = out[-1][:-1]
            out.append(o + ws)
            fix.append((n_out - 1, 0))
        else:
            out.append(o)
            fix.append((n_out, 0))
        n_out += 1

    def lowered(run: str) -> None:
        low = "".join(c.lower() for c in run)  # per character: str.lower of a word would make a final sigma
        for k, (a, b) in enumerate(zip(run, low)):
            if len(a.encode("utf-8")) != len(b.encode("utf-8")):
                fix.append((n_out + k, len(a.encode("utf-8"))))
        put(low)

    for m in pattern.finditer(text):
        a, b = m.span()
        if a > pos:
            put(text[pos:a])
        if m.group(1):  # a literal operator character
            put(ESC)
            fix.append((n_out - 1, 0))
            put(m.group(1))
        else:
            run = m.group(2)
            nxt = text[b] if b < len(text) else ""
            # ALLCAPS covers the run up to a character that has an upper case (the decoder would take it in too)
            k = len(run) if nxt not in lower else len(run) - 1
            if k >= 2:
                op(ALLCAPS, a)
                lowered(run[:k])
                rest = range(k, len(run))
            else:
                rest = range(len(run))
            for j in rest:
                at = a + j
                op(TITLE if at == 0 or not text[at - 1].isalpha() else CAPNEXT, at)
                lowered(run[j])
        pos = b
    if pos < len(text):
        put(text[pos:])
    t = "".join(out)
    nbytes = _utf8_lengths(t)
    for i, v in fix:
        nbytes[i] = v
    return t, nbytes


def encode(text: str) -> str:
    """The transformed text (lower-case lexical stream with operator characters)."""
    return encode_with_bytes(text)[0]


def decode(t: str, strict: bool = True) -> str:
    """The original text of ``encode``'s output. A stream ``encode`` cannot have written (an operator at the end,
    or a capital operator before a character without an upper case, as a model may sample or NFKC may make) raises
    ValueError, or with ``strict=False`` loses those operators."""
    _, lower = _tables()
    out: list[str] = []
    i, n = 0, len(t)
    while i < n:
        c = t[i]
        if c == ESC:
            if i + 1 >= n:
                if strict:
                    raise ValueError(f"caseops: ESC at the end of the text (position {i})")
                break
            out.append(t[i + 1])
            i += 2
        elif c in (TITLE, CAPNEXT, ALLCAPS):
            i += 1
            if i < n and t[i].isspace():
                out.append(t[i])
                i += 1
            if c == ALLCAPS:
                j = i
                while j < n and t[j] in lower:
                    j += 1
                out.append("".join(x.upper() for x in t[i:j]))
                i = j
            else:
                if i < n and t[i] in lower:
                    out.append(t[i].upper())
                    i += 1
                elif strict:
                    raise ValueError(f"caseops: a case operator before a character without an upper case (position "
                                     f"{i})")
        else:
            m = _OPERATOR.search(t, i)
            j = m.start() if m else n
            out.append(t[i:j])
            i = j
    return "".join(out)


def token_bytes(char_bytes: np.ndarray, spans: list[tuple[int, int]]) -> np.ndarray:
    """Original bytes per token. ``char_bytes``: the original bytes of each character of a transformed document;
    ``spans``: each token's [begin, end) in those characters (SentencePiece's offset mapping). A character goes to
    the token that holds it; one that normalisation dropped (extra whitespace) to the nearest token before it that
    holds bytes of its own, else the nearest after it (so not to an operator's token), else the first token. The
    sum is ``char_bytes.sum()`` whenever there is a token, and an operator's token carries 0 unless the operator
    was a literal input character. (n_tokens,) int64."""
    n = len(spans)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    begins = np.maximum.accumulate(np.array([b for b, _ in spans], dtype=np.int64))  # in order; made sure
    ends = np.maximum.accumulate(np.array([e for _, e in spans], dtype=np.int64))
    pos = np.arange(char_bytes.size)
    owner = np.searchsorted(begins, pos, side="right") - 1  # the last token starting at or before the character
    held = (owner >= 0) & (pos < ends[np.maximum(owner, 0)])
    own = np.bincount(owner[held], weights=char_bytes[held], minlength=n)
    carriers = np.flatnonzero(own > 0)
    if carriers.size:
        k = np.searchsorted(carriers, owner[~held], side="right") - 1
        owner[~held] = carriers[np.maximum(k, 0)]  # k < 0: nothing before, the first carrier after
    return np.bincount(np.maximum(owner, 0), weights=char_bytes, minlength=n).astype(np.int64)
