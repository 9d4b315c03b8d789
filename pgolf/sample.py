"""Use a trained model: ``pgolf.load`` (a run directory or an artifact -> the model and its tokenizer) and
``pgolf sample``.

    model, sp = pgolf.load("runs/RUN")     # or runs/RUN/model.pgz; tokenizer=PATH to give it
    pgolf sample runs/RUN --prompt "The" --tokens 50 --temperature 0.8 --seed 1

The artifact records the sha256 of the tokenizer the model trained with, and only a file with that fingerprint is
used: another tokenizer would turn the model's ids into other text. It is the one given, else the first match among
the ``.model`` files beside the artifact (every run keeps a copy, ``tokenizer.model``), the path the run recorded
(absolute, on the machine that trained) and the usual data locations (pgolf.data.find_tokenizer). Not packed into
train_gpt.py, which only trains.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import torch

from .config import InputError, ModelConfig
from .files import sha256_file
from .model import GPT, apply_precision
from .quant import read_artifact
from .tokenizer import load_sentencepiece


def artifact_path(path: str | os.PathLike) -> Path:
    """The artifact of a run directory (its model.pgz), or the file itself."""
    p = Path(path)
    if p.is_dir():
        if not (p / "model.pgz").is_file():
            raise InputError(f"{p}: no model.pgz in it (a run that has not finished, or not a run directory)")
        return p / "model.pgz"
    if not p.is_file():
        raise InputError(f"{p}: no such run directory or artifact")
    return p


def tokenizer_candidates(artifact: Path, meta: dict) -> list[Path]:
    """Where a run's tokenizer may be, most specific first (existing files only, each once)."""
    from .data import challenge_data_dir, find_tokenizer
    from .embedded import cache_dir

    cfg = meta.get("config") or {}
    data = cfg.get("data") or {}
    out = sorted(artifact.parent.glob("*.model"))
    recorded = [data.get("tokenizer")]
    summary = artifact.parent / "summary.json"
    if summary.is_file():
        try:
            recorded.append(json.loads(summary.read_text()).get("tokenizer"))
        except (OSError, ValueError):
            pass
    out += [Path(t) for t in recorded if t]
    vocab = (cfg.get("model") or {}).get("vocab_size") or 1024
    for d in (data.get("path"), os.environ.get("PGOLF_DATA"), challenge_data_dir(vocab)):
        if d and Path(d).is_dir():
            try:
                out.append(find_tokenizer(d))
            except FileNotFoundError:
                pass
    out.append(cache_dir() / "embedded.model")  # a run on the embedded corpus, on this machine
    seen, unique = set(), []
    for p in out:
        key = p.resolve()
        if key not in seen and p.is_file():
            seen.add(key)
            unique.append(p)
    return unique


def find_run_tokenizer(artifact: Path, meta: dict, given: str | os.PathLike | None = None) -> Path:
    """The tokenizer the artifact trained with, matched by sha256 (see the module docstring)."""
    want = meta.get("tokenizer_sha256")
    if given is not None:
        given = Path(given)
        if not given.is_file():
            raise InputError(f"tokenizer not found: {given}")
        got = sha256_file(given)
        if want and got != want:
            raise InputError(f"{given}: not the tokenizer {artifact} was trained with (sha256 {got[:12]}, the "
                             f"artifact records {want[:12]})")
        return given
    candidates = tokenizer_candidates(artifact, meta)
    for c in candidates:
        if want is None or sha256_file(c) == want:  # an artifact without a fingerprint: the nearest file
            return c
    looked = ", ".join(map(str, candidates)) or "no .model file anywhere"
    raise InputError(f"{artifact}: no tokenizer with the sha256 it was trained with ({(want or '?')[:12]}); looked "
                     f"at {looked}. Put the run's .model file beside the artifact or pass it (--tokenizer PATH, "
                     "tokenizer=PATH)")


def load(path: str | os.PathLike, tokenizer: str | os.PathLike | None = None, device: str | torch.device = "cpu"
         ) -> tuple[GPT, Any]:
    """A run directory or artifact -> (the model in eval mode on ``device``, its sentencepiece
    SentencePieceProcessor).

    The model is rebuilt from the artifact alone (its header holds the model config) with the weights the artifact
    ships, i.e. after quantization: the model that was scored."""
    artifact = artifact_path(path)
    header, state = read_artifact(artifact)
    meta = header.get("meta") or {}
    tok_path = find_run_tokenizer(artifact, meta, tokenizer)
    sp = load_sentencepiece(tok_path)
    dev = torch.device(device)
    model = GPT(ModelConfig(**header["model"])).to(dev)
    apply_precision(model, dev)
    model.use_attention(dev)
    model.load_state_dict(state, strict=True)
    model.looped = True  # scored with its depth recurrence, as the run scored it
    if int(sp.vocab_size()) > model.cfg.vocab_size:
        raise InputError(f"{tok_path}: {sp.vocab_size()} pieces, more than the model's vocabulary "
                         f"({model.cfg.vocab_size})")
    return model.eval(), sp


def continue_text(model: GPT, sp, prompt: str, max_new_tokens: int, temperature: float = 0.8, top_k: int = 0,
                  seed: int = 1337) -> str:
    """The text the model writes after ``prompt``, as the start of a document ([BOS] + prompt), up to
    ``max_new_tokens`` tokens and cut where the model starts a new document (a BOS). Draws come from a CPU
    generator seeded with ``seed``: the same seed gives the same text. With a CaseOps tokenizer the prompt is
    transformed and the text decoded back (operators the model put where they mean nothing are dropped)."""
    from . import caseops

    case_ops = caseops.is_caseops(sp)
    bos = model.cfg.bos_id
    prompt_ids = [bos] + sp.encode(caseops.encode(prompt) if case_ops else prompt)
    dev = model.tok_emb.weight.device
    ids = torch.tensor([prompt_ids], dtype=torch.long, device=dev)
    out = model.generate(ids, max_new_tokens, temperature=temperature, top_k=top_k,
                         generator=torch.Generator().manual_seed(seed))[0, len(prompt_ids):].tolist()
    if bos in out:
        out = out[:out.index(bos)]
    def text(ids: list[int]) -> str:
        t = sp.decode(ids)
        return caseops.decode(t, strict=False) if case_ops else t

    head = text(prompt_ids[1:])
    full = text(prompt_ids[1:] + out)  # decoded together: a piece's leading space survives
    return full[len(head):] if full.startswith(head) else text(out)


# ---------------------------------------------------------------------------------------------------------------
# Command line


def cmd_sample(args) -> int:
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model, sp = load(args.run, args.tokenizer, device)
    if args.tokens < 0:
        raise InputError(f"--tokens {args.tokens}: must be >= 0")
    print(continue_text(model, sp, args.prompt, args.tokens, args.temperature, args.top_k, args.seed), flush=True)
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "sample", help="print what a trained model writes after a prompt",
        description="Load a run's artifact and its tokenizer (matched by fingerprint) and print the continuation of "
                    "--prompt, as the start of a document. The same --seed gives the same text.",
        epilog="examples:\n"
               "  pgolf sample runs/RUN --prompt 'The history of'\n"
               "  pgolf sample runs/RUN/model.pgz --prompt 'def main(' --tokens 200 --temperature 0  # greedy\n"
               "  pgolf sample RUN --tokenizer data/tokenizers/fineweb_1024_bpe.model --top-k 50 --seed 7",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", metavar="RUN_OR_ARTIFACT", help="a run directory or its model.pgz")
    p.add_argument("--prompt", default="", help="text to continue (default: none, a document from its start)")
    p.add_argument("--tokens", type=int, default=50, metavar="N",
                   help="at most N new tokens; stops early where the model starts a new document (default 50)")
    p.add_argument("--temperature", type=float, default=0.8, metavar="T", help="0 = greedy (default 0.8)")
    p.add_argument("--top-k", type=int, default=0, metavar="K", help="sample among the K likeliest (default: all)")
    p.add_argument("--seed", type=int, default=1337, help="seed of the draws (default 1337)")
    p.add_argument("--tokenizer", help="the run's SentencePiece .model (default: found by its fingerprint)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.set_defaults(fn=cmd_sample)
