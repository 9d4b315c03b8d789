"""From runs to a submission: ``pgolf seeds``, ``pgolf compare``, ``pgolf submit``, ``pgolf inspect``.

    pgolf seeds --recipe best --seeds 1337,42,7 [--data DIR ...]     # several seeds, run dirs kept together
    pgolf compare runs/A -- runs/B                                     # Welch t-test: B beats A by >= 0.005 nats
    pgolf submit runs/B --name "..." --author "..." --github-id ...   # the records folder (after pgolf audit)
    pgolf inspect runs/B/best-s1337/model.pgz                          # per-tensor storage table

The challenge accepts a record that beats the state of the art by at least 0.005 nats at p < 0.01, usually shown
with 3 seeds (one-sided t-test against SOTA - 0.005).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import shutil
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from .config import BUDGET_BYTES, EXIT_OVER_BUDGET, Config, InputError, OverBudget
from .files import sha256_bytes

RECORD_THRESHOLD_NATS = 0.005


# ---------------- statistics ----------------

def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz; Numerical Recipes 6.4)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    lbeta = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(lbeta) * _betacf(a, b, x) / a
    return 1.0 - math.exp(lbeta) * _betacf(b, a, 1.0 - x) / b


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with df degrees of freedom."""
    x = df / (df + t * t)
    tail = 0.5 * betainc(df / 2.0, 0.5, x)
    return tail if t > 0 else 1.0 - tail


@dataclass
class Welch:
    mean_a: float
    mean_b: float
    std_a: float
    std_b: float
    n_a: int
    n_b: int
    t: float
    df: float
    p: float  # one-sided: H1 mean_a - mean_b > margin


def welch_one_sided(a: list[float], b: list[float], margin: float = RECORD_THRESHOLD_NATS) -> Welch:
    """Welch's t-test of H1: mean(a) - mean(b) > margin (B lower than A by more than the margin)."""
    if len(a) < 2 or len(b) < 2:
        raise InputError(f"a t-test needs at least 2 runs per group (got {len(a)} and {len(b)})")
    ma, mb = statistics.fmean(a), statistics.fmean(b)
    va, vb = statistics.variance(a, ma), statistics.variance(b, mb)
    se2 = va / len(a) + vb / len(b)
    if se2 == 0:
        diff = ma - mb - margin
        return Welch(ma, mb, 0.0, 0.0, len(a), len(b), math.copysign(math.inf, diff), math.inf,
                     0.0 if diff > 0 else 1.0)
    t = (ma - mb - margin) / math.sqrt(se2)
    df = se2 ** 2 / ((va / len(a)) ** 2 / (len(a) - 1) + (vb / len(b)) ** 2 / (len(b) - 1))
    return Welch(ma, mb, math.sqrt(va), math.sqrt(vb), len(a), len(b), t, df, t_sf(t, df))


def mean_std(xs: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


# ---------------- runs ----------------

def find_runs(paths: list[str]) -> list[Path]:
    """Run directories (holding summary.json) from the given paths; a folder of runs expands to its runs."""
    out: list[Path] = []
    for p in map(Path, paths):
        if (p / "summary.json").is_file():
            out.append(p)
        elif p.is_dir():
            found = sorted(q.parent for q in p.glob("*/summary.json"))
            if not found:
                raise InputError(f"{p}: no runs in it (no summary.json here or one level down)")
            out += found
        else:
            raise InputError(f"{p}: not a run directory")
    return out


def load_summary(run: Path) -> dict:
    try:
        return json.loads((run / "summary.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"{run / 'summary.json'}: unreadable ({e})") from None


def load_config(run: Path) -> Config:
    return Config.from_dict(json.loads((run / "config.json").read_text()))


# ---------------- commands ----------------

def cmd_seeds(args) -> int:
    from .cli import resolve_config
    from .train import train

    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    if not seeds:
        raise InputError("--seeds needs at least one seed, e.g. --seeds 1337,42,7")
    cfg = resolve_config(args)
    group = Path(args.out or os.environ.get("PGOLF_RUNS", "runs")) / (
        args.name or f"{time.strftime('%Y%m%d-%H%M%S')}-{cfg.name}-seeds")
    results = []
    for seed in seeds:
        c = Config.from_dict(cfg.to_dict())
        c.train.seed = seed
        s = train(c, group / f"{cfg.name}-s{seed}")
        results.append((seed, s))
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"\nseeds of {cfg.name} in {group}:")
        for seed, s in results:
            print(f"  seed {seed}: val_bpb {s['val_bpb']:.6f} val_loss {s['val_loss']:.6f} bytes {s['bytes_total']:,}")
        bpbs = [s["val_bpb"] for _, s in results]
        if len(bpbs) > 1:
            m, sd = mean_std(bpbs)
            print(f"  mean val_bpb {m:.6f} std {sd:.6f}")
        over = [seed for seed, s in results if s.get("over_budget")]
        if over:
            print(f"  ERROR: over budget: seed{'s' if len(over) > 1 else ''} {', '.join(map(str, over))}")
    return EXIT_OVER_BUDGET if any(s.get("over_budget") for _, s in results) else 0


def _group_values(runs: list[Path]) -> tuple[list[float], list[float]]:
    sums = [load_summary(r) for r in runs]
    return [s["val_loss"] for s in sums], [s["val_bpb"] for s in sums]


def cmd_compare(args) -> int:
    from .cli import GROUP_SEPARATOR

    if GROUP_SEPARATOR not in args.runs:
        raise InputError("usage: pgolf compare RUNS_A ... -- RUNS_B ...")
    k = args.runs.index(GROUP_SEPARATOR)
    ra, rb = find_runs(args.runs[:k]), find_runs(args.runs[k + 1:])
    la, ba = _group_values(ra)
    lb, bb = _group_values(rb)
    w = welch_one_sided(la, lb, args.margin)
    wb = welch_one_sided(ba, bb, 0.0)

    for name, loss, bpb in (("A", la, ba), ("B", lb, bb)):
        (ml, sl), (mb, sb) = mean_std(loss), mean_std(bpb)
        print(f"{name}: n={len(loss)} val_loss {ml:.6f} +- {sl:.6f}  val_bpb {mb:.6f} +- {sb:.6f}")
    print(f"B - A: val_loss {w.mean_b - w.mean_a:+.6f} nats, val_bpb {wb.mean_b - wb.mean_a:+.6f}")
    print(f"one-sided Welch t-test, H1: B beats A by more than {args.margin} nats: t={w.t:.3f} df={w.df:.2f} "
          f"p={w.p:.3g} -> {'significant' if w.p < args.alpha else 'not significant'} at {args.alpha}")
    if args.plot != "":
        from .plots import plot_compare

        out = Path(args.plot) if args.plot else default_plot_path(args.runs[:k])
        if plot_compare([ra, rb], out):
            print(f"plot: {out}")
    return 0


def default_plot_path(group_a: list[str]) -> Path:
    """compare.png in the first group's folder: the folder given for it, or the one its runs share."""
    if len(group_a) == 1:
        return Path(group_a[0]) / "compare.png"
    return Path(os.path.commonpath([os.path.abspath(p) for p in group_a])) / "compare.png"


def tensor_table(path: str | os.PathLike) -> tuple[list[dict], int]:
    """Per tensor: name, shape, format, note (gptq, awq-*, lqer, sorted), raw bytes (codes, scales and any AWQ / LQER /
    row-order buffers), compressed-byte share, relative error of what the reader rebuilds; and the file's bytes.
    Compression is not separable, so a tensor's share is its buffers compressed on their own, rescaled so the
    shares add up exactly to the file's bytes (header and container overhead spread in proportion)."""
    from .quant import COMPRESSORS, compress, read_payload, side_buffers

    header, body, cid = read_payload(path)
    compressor = {v: k for k, v in COMPRESSORS.items()}[cid]
    level = {"zlib": 9, "lzma": 9, "zstd": 19, "brotli": 9}[compressor]  # shares only; the top levels are slow
    total = Path(path).stat().st_size
    rows = []
    for rec in header["tensors"]:
        b = bytes(body[rec["offset"]:rec["offset"] + rec["nbytes"]])
        if rec.get("scale_nbytes"):
            b += bytes(body[rec["scale_offset"]:rec["scale_offset"] + rec["scale_nbytes"]])
        for off, n in side_buffers(rec):
            b += bytes(body[off:off + n])
        rows.append({"name": rec["name"], "shape": rec["shape"], "fmt": rec["fmt"], "note": rec.get("fmt_note", ""),
                     "raw_bytes": len(b),
                     "own": len(compress(b, compressor, level)), "rel_error": rec.get("rel_error")})
    own_sum = sum(r["own"] for r in rows) or 1
    acc = 0
    for r in rows:
        r["bytes"] = int(r["own"] * total / own_sum)
        acc += r["bytes"]
    if rows:  # put the rounding remainder on the largest tensor so the column sums to the file size exactly
        max(rows, key=lambda r: r["bytes"])["bytes"] += total - acc
    return rows, total


def cmd_inspect(args) -> int:
    rows, total = tensor_table(args.artifact)
    print(f"{'tensor':44s} {'shape':>14s} {'format':>6s} {'raw':>11s} {'compressed':>11s} {'share':>6s} {'rel.err':>8s}"
          "  note")
    by_fmt: dict[str, list[int]] = {}
    for r in sorted(rows, key=lambda r: -r["bytes"]) if args.sort else rows:
        err = f"{r['rel_error']:.4f}" if r.get("rel_error") is not None else "-"
        print(f"{r['name']:44s} {'x'.join(map(str, r['shape'])) or 'scalar':>14s} {r['fmt']:>6s} {r['raw_bytes']:>11,} "
              f"{r['bytes']:>11,} {100 * r['bytes'] / total:>5.1f}% {err:>8s}  {r['note']}".rstrip())
        f = by_fmt.setdefault(r["fmt"], [0, 0, 0])
        f[0] += 1
        f[1] += r["raw_bytes"]
        f[2] += r["bytes"]
    print("-" * 106)
    for fmt, (n, raw, comp) in sorted(by_fmt.items()):
        print(f"{fmt:>6s}: {n:4d} tensors  raw {raw:>12,}  compressed {comp:>12,} ({100 * comp / total:.1f}%)")
    print(f"total: {len(rows)} tensors, {sum(r['raw_bytes'] for r in rows):,} raw bytes, {total:,} bytes on disk")
    return 0


def check_submittable(runs: list[Path]) -> tuple[list[dict], list[Config], bytes]:
    """The runs' summaries, configs and the packed file they all trained with; an InputError if any run is not
    complete, was trained by another file or with another tokenizer than the others, or is over budget."""
    sums = [load_summary(r) for r in runs]
    cfgs = [load_config(r) for r in runs]
    scripts = []
    for r, s in zip(runs, sums):
        if s.get("status", "complete") != "complete" or "val_bpb" not in s:
            raise InputError(f"{r}: the run did not complete (status {s.get('status')!r}); nothing was written")
        p = r / "train_gpt.py"
        if not p.is_file() or "code_sha256" not in s or "tokenizer_sha256" not in s:
            raise InputError(f"{r}: no train_gpt.py, code or tokenizer fingerprint recorded (a run from an older "
                             "pgolf): train it again to submit it; nothing was written")
        script = p.read_bytes()
        if sha256_bytes(script) != s["code_sha256"]:
            raise InputError(f"{p}: changed after the run (sha256 differs from summary.json's code_sha256); "
                             "nothing was written")
        scripts.append(script)
    for r, script, s in zip(runs[1:], scripts[1:], sums[1:]):
        if script != scripts[0]:
            raise InputError(f"refusing to submit: {r}/train_gpt.py differs from {runs[0]}/train_gpt.py (these runs "
                             "did not train the same code and config); nothing was written")
        if s["tokenizer_sha256"] != sums[0]["tokenizer_sha256"]:
            raise InputError(f"refusing to submit: {r} used another tokenizer than {runs[0]} (sha256 "
                             f"{s['tokenizer_sha256'][:12]} vs {sums[0]['tokenizer_sha256'][:12]}); nothing was written")
    code_bytes = len(scripts[0])
    over = [(r, s["bytes_model"] + code_bytes) for r, s in zip(runs, sums)
            if s["bytes_model"] + code_bytes > BUDGET_BYTES]
    if over:
        lines = "; ".join(f"{r}: {n:,} bytes" for r, n in over)
        raise OverBudget(f"refusing to submit: artifact over the {BUDGET_BYTES:,}-byte budget ({lines}); "
                         "nothing was written")
    return sums, cfgs, scripts[0]


def cmd_submit(args) -> int:
    from .audit import refuse_on_fail

    runs = find_runs(args.runs)
    sums, cfgs, script = check_submittable(runs)
    refuse_on_fail(runs)  # every rule pgolf can check mechanically (pgolf audit), before anything is written
    code_bytes = len(script)
    date = _dt.date.today().isoformat()
    slug = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in args.name).strip("_")
    out = Path(args.out) / f"{date}_{slug}"
    if out.exists():
        raise InputError(f"{out} already exists; pick another --name or remove it")
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / "train_gpt.py").write_bytes(script)  # the very file the runs trained with
    seeds = [s["seed"] for s in sums]
    bpb = [s["val_bpb"] for s in sums]
    loss = [s["val_loss"] for s in sums]
    n = len(bpb)
    (m_bpb, sd), (m_loss, _) = mean_std(bpb), mean_std(loss)
    for r, s in zip(runs, sums):
        shutil.copy(r / "train.log", tmp / f"train_seed{s['seed']}.log")
    meta = {
        "author": args.author, "github_id": args.github_id, "name": args.name,
        "blurb": args.blurb or f"pgolf recipe '{cfgs[0].name}'", "date": date,
        "val_loss": round(m_loss, 8), "val_bpb": round(m_bpb, 8),
        "bytes_total": max(s["bytes_model"] for s in sums) + code_bytes, "bytes_code": code_bytes,
        "seeds": seeds, "val_bpb_std": round(sd, 8), "code_sha256": sha256_bytes(script),
        "seed_results": {str(s["seed"]): {"val_loss": s["val_loss"], "val_bpb": s["val_bpb"],
                                          "artifact_bytes": s["bytes_model"] + code_bytes, "steps": s["steps"]}
                         for s in sums},
        "hardware": sums[0].get("device"), "pytorch_version": sums[0].get("torch"),
        "recipe": cfgs[0].name, "final_eval": sums[0].get("final_mode"),
    }
    (tmp / "submission.json").write_text(json.dumps(meta, indent=2) + "\n")
    table = "\n".join(f"| {s['seed']} | {s['steps']:,} | {s['ms_per_step']:.1f} | {s['val_loss']:.6f} | "
                      f"{s['val_bpb']:.6f} | {s['bytes_model'] + code_bytes:,} |" for s in sums)
    c = cfgs[0]
    (tmp / "README.md").write_text(f"""# {args.name}

{meta['blurb']}

**val_bpb {m_bpb:.6f}** (mean of {n} seed{'s' if n > 1 else ''}, std {sd:.6f}; final eval: {meta['final_eval']}, after
the artifact's roundtrip). Artifact: at most {meta['bytes_total']:,} bytes = model + {code_bytes:,} bytes of code
(`train_gpt.py`).

## Recipe `{c.name}`
- model: {c.model.num_layers} layers x {c.model.model_dim}, {c.model.num_heads} heads / {c.model.num_kv_heads} KV heads,
  MLP hidden {c.model.hidden_dim} ({c.model.activation}), vocab {c.model.vocab_size}, tied embeddings
  {c.model.tie_embeddings}; SmearGate {c.model.smear_gate}; BigramHash {c.model.bigram_buckets}x{c.model.bigram_dim};
  OrthoInit {c.model.ortho_init}; XSA last {c.model.xsa_last_n}
- training: {c.train.max_seconds:.0f} s budget, batch {c.train.batch_tokens:,} tokens, seq {c.train.seq_len};
  Muon lr {c.optim.matrix_lr} momentum {c.optim.muon_momentum_start}->{c.optim.muon_momentum} wd {c.optim.muon_wd};
  warm-down {c.schedule.warmdown_frac or str(c.schedule.warmdown_iters) + ' steps'}; SWA
  {c.schedule.swa_every_frac or c.schedule.swa_every or 'off'}; EMA {c.schedule.ema_decay or 'off'};
  QAT from {c.schedule.qat_start_frac or 'off'}
- artifact: MLP {c.quant.mlp}, attention {c.quant.attn}, embeddings {c.quant.embed}, other {c.quant.other},
  {c.quant.compressor}-{c.quant.level}
- eval: {c.eval.final}{f' (stride {c.eval.sliding_stride})' if c.eval.final == 'sliding' else ''}

Full configuration: the `CONFIG` block of `train_gpt.py`, the file every seed trained with (each run wrote it when it
started; pgolf checked they are identical).

## Seeds

| seed | steps | ms/step | val_loss | val_bpb | artifact bytes |
| --- | --- | --- | --- | --- | --- |
{table}

Mean val_bpb {m_bpb:.6f}, std {sd:.6f}. Hardware: {meta['hardware']}, PyTorch {meta['pytorch_version']}.

## Reproduce

    torchrun --standalone --nproc_per_node=8 train_gpt.py --seed SEED
""")
    os.replace(tmp, out)
    print(f"wrote {out}: README.md, submission.json, train_gpt.py ({code_bytes:,} bytes), {n} log(s); "
          f"val_bpb {m_bpb:.6f} +- {sd:.6f}")
    return 0


def add_parsers(sub) -> None:
    from .cli import _add_config_args

    p = sub.add_parser("seeds", help="train one recipe with several seeds, run directories kept together")
    _add_config_args(p)
    p.add_argument("--seeds", required=True, help="comma-separated, e.g. 1337,42,7")
    p.add_argument("--out", help="runs folder (default: $PGOLF_RUNS or ./runs)")
    p.add_argument("--name", help="folder name of the group (default: time-recipe-seeds)")
    p.set_defaults(fn=cmd_seeds)

    p = sub.add_parser("compare", help="means, std and a one-sided Welch t-test between two groups of runs")
    p.add_argument("runs", nargs="+", help="RUNS_A ... -- RUNS_B ... (run folders or folders of runs)")
    p.add_argument("--margin", type=float, default=RECORD_THRESHOLD_NATS, help="nats B must beat A by (0.005)")
    p.add_argument("--alpha", type=float, default=0.01)
    p.add_argument("--plot", help="PNG of both groups' curves and scores (default: compare.png in the first "
                                  "group's folder; '' = none)")
    p.set_defaults(fn=cmd_compare)

    p = sub.add_parser("submit", help="write the challenge's records folder from a group of runs")
    p.add_argument("runs", nargs="+")
    p.add_argument("--name", required=True)
    p.add_argument("--author", required=True)
    p.add_argument("--github-id", required=True)
    p.add_argument("--blurb")
    p.add_argument("--out", default="records/track_10min_16mb")
    p.set_defaults(fn=cmd_submit)

    p = sub.add_parser("inspect", help="per-tensor table of an artifact: shape, format, bytes, quantization error")
    p.add_argument("artifact")
    p.add_argument("--sort", action="store_true", help="largest first")
    p.set_defaults(fn=cmd_inspect)
