"""The embedded default corpus: text that ships with every Python install, so ``pgolf train`` runs offline.

Documents are the pydoc topic pages (``pydoc_data.topics``) and the longer docstrings of the standard library
(read with ``ast``; nothing is imported). A 1024-piece SentencePiece BPE tokenizer is trained on them with the
challenge's settings and the documents are written as challenge shards ([BOS] + tokens), every 10th to val.
This is a smoke test of the whole pipeline, not a benchmark: for the real data see ``pgolf data fineweb``.
"""

from __future__ import annotations

import ast
import json
import os
import sysconfig
from pathlib import Path

from .data import write_shard
from .files import sha256_file

VERSION = 3  # 3: duplicate documents dropped (7 validation documents were also in training; pgolf audit)
SKIP_DIRS = {"test", "tests", "idlelib", "site-packages", "dist-packages", "lib2to3", "turtledemo", "__pycache__"}


def cache_dir() -> Path:
    root = os.environ.get("PGOLF_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "pgolf")
    return Path(root) / f"embedded-v{VERSION}"


def documents(min_chars: int = 200) -> list[str]:
    import pydoc_data.topics as topics

    docs = [topics.topics[k] for k in sorted(topics.topics)]
    lib = Path(sysconfig.get_paths()["stdlib"])
    for p in sorted(lib.rglob("*.py")):
        if SKIP_DIRS & set(p.relative_to(lib).parts):
            continue
        try:
            tree = ast.parse(p.read_text(encoding="utf-8"))
        except Exception:
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                d = ast.get_docstring(node)
                if d and len(d) >= min_chars:
                    docs.append(d)
    return list(dict.fromkeys(docs))  # once each: a docstring repeated across modules must not be in val and train


def ensure_embedded(log=print, vocab_size: int = 1024) -> Path:
    """Build (once) and return the folder with embedded.model and fineweb_{train,val}_000000.bin.

    Built in a private temporary folder and renamed into place, so concurrent processes (torchrun) never see a
    half-written corpus."""
    out = cache_dir()
    if (out / "manifest.json").exists():
        return out
    import shutil

    import sentencepiece as spm

    from .tokenizer import train_tokenizer

    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    docs = documents()
    log(f"embedded corpus: building from {len(docs)} Python documentation texts into {out}")
    model = train_tokenizer(docs, vocab_size, str(tmp / "embedded"), num_threads=1).model
    sp = spm.SentencePieceProcessor(model_file=str(model))
    train, val = [], []
    for i, d in enumerate(docs):
        (val if i % 10 == 0 else train).extend([1] + sp.encode(d))
    write_shard(tmp / "fineweb_train_000000.bin", train)
    write_shard(tmp / "fineweb_val_000000.bin", val)
    (tmp / "manifest.json").write_text(json.dumps({
        "docs": len(docs), "train_tokens": len(train), "val_tokens": len(val), "vocab_size": sp.vocab_size(),
        "tokenizer_sha256": sha256_file(model), "source": "pydoc_data.topics + stdlib docstrings"}))
    try:
        os.rename(tmp, out)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return out
