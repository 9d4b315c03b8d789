"""``pgolf requant RUN``: export one run's trained weights under other storage policies and score each -- quant gap
and bytes on the same weights, the comparison the export's techniques need.

    pgolf requant runs/R --variant "quantile:" --variant "sdclip:quant.sdclip=attn:13,mlp:11.5,other:12.85,embed:14" \\
        --variant "gptq:quant.gptq=true" --variant "brotli:quant.compressor=auto" [--modes plain,sliding] [--data DIR]

The run must have kept its float weights (``--set train.keep_float=true`` writes ``model_float.pt``). Each variant is
``NAME:key=value;key=value`` (quant.* keys on top of the run's policy; empty = the run's own). GPTQ variants calibrate
on the run's training shards (its first micro-batches). Prints, per variant: the policy used (after the fit ladder),
model + code bytes, and for each mode pre-quant vs roundtrip val_bpb and the gap; ``--json FILE`` writes them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import torch

from .config import Config, InputError, apply_overrides


def parse_variant(text: str) -> tuple[str, list[str]]:
    name, _, sets = text.partition(":")
    if not name:
        raise InputError(f"--variant {text!r}: expected NAME:key=value;key=value")
    return name, [s.strip() for s in sets.split(";") if s.strip()]


def cmd_requant(args) -> int:
    from .data import DistributedTokenLoader, prepare_data
    from . import __version__
    from .evaluate import check_modes, evaluate
    from .model import GPT, apply_precision, compile_model
    from .quant import policy_of, quantize_to_budget, read_artifact
    from .train import calibrate_hessians

    run = Path(args.run)
    floats = run / "model_float.pt"
    if not floats.is_file():
        raise InputError(f"{floats}: missing; train with --set train.keep_float=true to keep the float weights")
    cfg = Config.from_dict(json.loads((run / "config.json").read_text()))
    if args.data:
        cfg.data.path, cfg.data.tokenizer = args.data, args.tokenizer or ""
    cfg = apply_overrides(cfg, args.set or [])
    modes = [m for m in args.modes.split(",") if m]
    check_modes(cfg, modes, str(run))
    variants = [parse_variant(text if ":" in text else text + ":") for text in args.variant or [":"]]
    for name, sets in variants:  # every variant's keys checked before any work
        apply_overrides(cfg, sets)
    code = (run / "train_gpt.py").read_bytes() if (run / "train_gpt.py").is_file() else b""
    code_bytes = len(code)
    device = torch.device("cuda" if torch.cuda.is_available() and args.device != "cpu" else "cpu")
    data = prepare_data(cfg, print)
    state = torch.load(floats, map_location="cpu")
    model = GPT(cfg.model).to(device)
    apply_precision(model, device)
    model.use_attention(device)
    model.looped = True
    model.load_state_dict(state)
    # the no-grad forwards compiled on a GPU, as a run and `pgolf eval` score (eager, a sliding eval of the sp8192
    # proxy model was unfinished after 320 s on an H100; compiled it takes 25 s plus ~60 s of compilation)
    evm = compile_model(model, device.type == "cuda" and cfg.train.compile)
    pre = evaluate(model, evm, cfg, data.val_tokens, data.val_bytes, device, modes)
    rows = []
    hessians = None
    for name, sets in variants:
        vcfg = apply_overrides(cfg, sets)
        t0 = time.perf_counter()
        hs = None
        if vcfg.quant.gptq:
            if hessians is None:  # once, the embedding's too; a variant without quant.gptq_embed leaves it out
                model.load_state_dict(state)
                loader = DistributedTokenLoader(data.train_files, 0, 1, device)
                hessians = calibrate_hessians(model, loader, vcfg, vcfg.quant.gptq_batches, embed=True)
            hs = {k: h for k, h in hessians.items() if vcfg.quant.gptq_embed or k != "tok_emb.weight"}
        # the meta a run's own artifact carries (its config: `pgolf eval` scores the file with the run's settings)
        meta = {"recipe": vcfg.name, "config": vcfg.to_dict(), "pgolf": __version__,
                "tokenizer_sha256": data.tokenizer_sha256, "code_sha256": hashlib.sha256(code).hexdigest(),
                "requant": {"run": str(run), "variant": name, "sets": sets}}
        result, used, blob = quantize_to_budget(state, vcfg.quant, vcfg.model.__dict__, meta, code_bytes,
                                                lambda *a: None, hs)
        export_s = time.perf_counter() - t0
        path = run / f"requant-{name}.pgz"
        path.write_bytes(blob)
        _, deq = read_artifact(path)
        model.load_state_dict(deq)
        rt = evaluate(model, evm, vcfg, data.val_tokens, data.val_bytes, device, modes)
        row = {"variant": name, "sets": sets, "policy": policy_of(used), "bytes_model": len(blob),
               "bytes_total": len(blob) + code_bytes, "export_s": export_s,
               "modes": {m: {"prequant": pre[m].bpb, "roundtrip": rt[m].bpb, "gap": rt[m].bpb - pre[m].bpb}
                         for m in modes}}
        rows.append(row)
        gaps = "  ".join(f"{m} {row['modes'][m]['roundtrip']:.5f} (gap {row['modes'][m]['gap']:+.5f})" for m in modes)
        print(f"{name:14s} {row['bytes_total']:>12,} bytes  {gaps}  export {export_s:.1f}s  "
              f"{'/'.join(v for v in row['policy'].values())}")
    if args.json:
        Path(args.json).write_text(json.dumps({"run": str(run), "prequant": {m: pre[m].bpb for m in modes},
                                               "variants": rows}, indent=2))
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser("requant", help="export a run's float weights under other policies: quant gap and bytes",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="a run directory trained with --set train.keep_float=true")
    p.add_argument("--variant", action="append", help="NAME:key=value;key=value (repeatable; quant.* keys)")
    p.add_argument("--modes", default="plain", help="eval modes, comma-separated (default plain)")
    p.add_argument("--data", help="the shards (default: the run's)")
    p.add_argument("--tokenizer")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--json", help="write the table as JSON")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override any config key for every variant and the pre-quant score (e.g. eval.batch_tokens)")
    p.set_defaults(fn=cmd_requant)
