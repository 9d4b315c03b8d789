"""Command line: ``pgolf train | eval | recipes | pack | predict`` and the tools' subcommands (pgolf.tools: sample,
config, plot, data, seeds, compare, submit, inspect, audit, bench, techniques).

Every subcommand has ``--help``. Configuration comes from a recipe or ``--config FILE`` plus
``--set section.key=value`` overrides; environment variables are read only for machine facts (PGOLF_DATA,
PGOLF_RUNS, PGOLF_CACHE, PGOLF_PEAK_TFLOPS).
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import sys
import time
from pathlib import Path

from .config import EXIT_INPUT, EXIT_INTERRUPTED, EXIT_OK, EXIT_OVER_BUDGET, Config, ConfigError, InputError, \
    Interrupted, OverBudget, apply_overrides

EXIT_CODES = ("exit codes: 0 ok, 1 unexpected error (a traceback), 2 bad input or usage (one line), 3 artifact over "
              "budget, 4 interrupted")


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--recipe", help="recipe name (pgolf recipes lists them); default: smoke on the embedded corpus "
                                    "when no data is given, else baseline")
    p.add_argument("--config", metavar="FILE", help="a config file instead of a recipe: JSON (a run's config.json "
                                                    "re-runs it exactly) or TOML")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set model.num_layers=11 (repeatable; pgolf config keys "
                        "lists every key)")
    p.add_argument("--seed", type=int, help="shorthand for --set train.seed=N")
    p.add_argument("--data", help="folder of fineweb_{train,val}_*.bin shards (default: $PGOLF_DATA, "
                                  "./data/datasets/fineweb10B_sp1024, else the embedded corpus)")
    p.add_argument("--tokenizer", help="SentencePiece .model (default: found next to the data)")
    p.add_argument("--budget", type=float, help="training wall-clock seconds (shorthand for train.max_seconds)")
    p.add_argument("--gpu-share", type=int, default=1, metavar="N",
                   help="train on 1/N of the recipe's global batch (one GPU's share of N), split over this run's "
                        "processes with no accumulation: the golfbench proxy uses 8; two processes at 4 keep 1/8 each")
    p.add_argument("--config-json", help=argparse.SUPPRESS)


def resolve_config(args) -> Config:
    from .recipes import get_recipe

    if args.config and args.recipe:
        raise ConfigError("give --recipe or --config, not both")
    if args.config_json:  # what a packed train_gpt.py passes
        cfg = Config.from_dict(json.loads(args.config_json))
    elif args.config:
        cfg = Config.from_file(args.config)
    else:
        name = args.recipe
        if name is None:
            from .data import challenge_data_dir

            has_data = bool(args.data or os.environ.get("PGOLF_DATA") or challenge_data_dir())
            name = "baseline" if has_data else "smoke"
        cfg = get_recipe(name)
    ov = list(args.overrides)
    if args.seed is not None:
        ov.append(f"train.seed={args.seed}")
    if args.data:
        ov.append(f"data.path={args.data}")
    if args.tokenizer:
        ov.append(f"data.tokenizer={args.tokenizer}")
    if args.budget is not None:
        ov.append(f"train.max_seconds={args.budget}")
    if args.gpu_share < 1:
        raise ConfigError(f"--gpu-share {args.gpu_share}: must be >= 1 (the number of GPUs whose batch share to run)")
    cfg = apply_overrides(cfg, ov)
    if args.gpu_share > 1:  # the global batch of that many GPUs, split over this run's processes, no accumulation
        from .dist import env_world_size

        world = env_world_size()
        share = cfg.train.batch_tokens // args.gpu_share
        if share * args.gpu_share != cfg.train.batch_tokens or share % (cfg.train.seq_len * world):
            raise ConfigError(f"--gpu-share {args.gpu_share} does not divide batch_tokens={cfg.train.batch_tokens} "
                              f"into whole sequences of {cfg.train.seq_len} on each of {world} process(es)")
        cfg = apply_overrides(cfg, [f"train.batch_tokens={share}", f"train.micro_batch_tokens={share // world}"])
    return cfg


def default_run_dir(cfg: Config, out: str | None, name: str | None) -> Path:
    root = Path(out or os.environ.get("PGOLF_RUNS", "runs"))
    return root / (name or f"{time.strftime('%Y%m%d-%H%M%S')}-{cfg.name}-s{cfg.train.seed}")


def cmd_train(args) -> int:
    from .train import train

    if args.resume:
        return _resume(args)
    cfg = resolve_config(args)
    summary = train(cfg, default_run_dir(cfg, args.out, args.name))
    return EXIT_OVER_BUDGET if summary.get("over_budget") else 0


def _resume(args) -> int:
    """Continue a paused run with the config it was started with (``--set`` may change e.g. the segment length)."""
    from .checkpoint import read_meta
    from .train import train

    run_dir = Path(args.resume)
    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file():
        raise InputError(f"{cfg_path}: not found; --resume takes the run directory of a paused run")
    read_meta(run_dir)  # a clear error before any process group starts
    # (a packed train_gpt.py always passes its baked --config-json: the run saved that same config)
    conflicting = [a for a in ("recipe", "config", "data", "tokenizer", "name", "out", "seed")
                   if getattr(args, a, None) is not None]
    if conflicting or (args.gpu_share and args.gpu_share > 1):
        raise InputError(f"--resume continues the run as configured in {cfg_path}; drop "
                         f"{', '.join('--' + a.replace('_', '-') for a in conflicting) or '--gpu-share'}")
    cfg = Config.from_dict(json.loads(cfg_path.read_text()))
    ov = list(args.overrides) + \
        ([f"train.max_seconds={args.budget}"] if args.budget is not None else [])
    summary = train(apply_overrides(cfg, ov), run_dir, resume=True)
    return EXIT_OVER_BUDGET if summary.get("over_budget") else 0


def cmd_eval(args) -> int:
    from .dist import rank_world
    from .evaluate import challenge_eval_note, predicted_challenge_eval_s
    from .score import by_source, score_artifact

    def progress(msg: str) -> None:  # data checks and the eval modes' progress lines; the scores go to stdout
        print(msg, file=sys.stderr, flush=True)

    sources = None
    if args.by_source:
        try:
            from .tools import document_sources
        except ImportError:  # a packed train_gpt.py
            raise InputError("--by-source needs the pgolf package: a packed train_gpt.py has no data tools") from None
        sources = document_sources(args.by_source)
    res = score_artifact(args.artifact, args.data, args.tokenizer, args.mode, args.overrides, device=args.device,
                         log=progress if int(os.environ.get("RANK", "0")) == 0 else None, sources=sources,
                         sources_file=args.by_source or "")
    world = rank_world()[1]
    for mode, r in res.items():
        print(f"{mode}: val_loss:{r.loss:.8f} val_bpb:{r.bpb:.8f} tokens:{r.tokens} bytes:{r.bytes:.0f} "
              f"eval:{r.seconds:.1f}s "
              + challenge_eval_note(predicted_challenge_eval_s(r.seconds, r.bytes, world, r.serial_s)))
        if sources is not None:
            for src, (bpb, docs, n, nbytes) in by_source(r, sources).items():
                print(f"{mode} by source: {src}: val_bpb:{bpb:.8f} docs:{docs} tokens:{n} bytes:{nbytes:.0f}")
    return 0


def cmd_recipes(args) -> int:
    from .recipes import RECIPES, get_recipe

    if args.name:
        print(get_recipe(args.name).to_json())
        return 0
    import textwrap

    for name, fn in RECIPES.items():
        print(name)
        print(textwrap.fill(" ".join((fn.__doc__ or "").split()), 116, initial_indent="    ",
                            subsequent_indent="    ", break_on_hyphens=False))  # "1,024-token" stays one word
    return 0


def cmd_pack(args) -> int:
    from .pack import build_script

    cfg = resolve_config(args)
    text = build_script(cfg, compress=not args.plain, minified=not args.no_minify)
    out = Path(args.output)
    out.write_text(text, encoding="utf-8")
    print(f"wrote {out}: {len(text.encode('utf-8')):,} bytes of code (recipe {cfg.name})")
    return 0


def cmd_predict(args) -> int:
    """The artifact a recipe will write, from its shapes and policy alone (no training, no data): the fitted policy
    and predicted bytes. The predictor assumes Gaussian-like rows (what short runs leave); long runs compress
    somewhat better, so it errs towards too large."""
    from .model import GPT
    from .pack import code_bytes
    from .predict import model_shapes, predict_fit
    from .quant import policy_of

    cfg = resolve_config(args)
    if cfg.model.vocab_size == 0:
        cfg.model.vocab_size = args.vocab
    code = code_bytes(cfg)
    model = GPT(cfg.model)
    used, nbytes = predict_fit(model_shapes(model), cfg.quant, cfg.model.__dict__, code)
    total = nbytes + code
    fitted = " (fitted: quant.fit_budget)" if used != cfg.quant else ""
    print(f"recipe {cfg.name}: vocab {cfg.model.vocab_size}, {model.num_params():,} params, policy "
          f"{policy_of(used)}{fitted}, {cfg.quant.compressor}-{cfg.quant.level}")
    print(f"predicted artifact: {total:,} bytes (model {nbytes:,} + code {code:,}); budget {cfg.quant.budget_bytes:,}"
          f" -> {'fits' if total <= cfg.quant.budget_bytes else 'OVER'}")
    return 0 if total <= cfg.quant.budget_bytes else EXIT_OVER_BUDGET


class _Version(argparse.Action):  # the install commit is looked up only when asked

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, help="print the version, install commit and torch, and exit")

    def __call__(self, parser, namespace, values, option_string=None):
        from importlib.metadata import version

        from . import __version__
        from .rundir import install_commit

        print(f"pgolf {__version__} ({install_commit()}) torch {version('torch')} python {sys.version.split()[0]}")
        parser.exit()


def _examples(*lines: str) -> dict:
    return {"epilog": "examples:\n" + "\n".join("  " + line for line in lines),
            "formatter_class": argparse.RawDescriptionHelpFormatter}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="pgolf", description="Parameter golf: train the best LM whose artifact fits "
                                                           "in 16,000,000 bytes.",
                                 epilog="examples:\n  pgolf train                        # the embedded default, CPU, "
                                        "minutes\n  pgolf train --recipe best --data DIR\n  pgolf sample runs/RUN "
                                        "--prompt 'The'\n  pgolf COMMAND --help\n\n" + EXIT_CODES,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", action=_Version)
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("train", help="train a recipe, write a run directory, print the scored val_bpb",
                       **_examples("pgolf train --recipe best --data DIR --set model.num_layers=10",
                                   "pgolf train --config runs/RUN/config.json --name again   # re-run a run",
                                   "torchrun --standalone --nproc_per_node=8 -m pgolf train --recipe best",
                                   "pgolf train --resume runs/RUN"))
    _add_config_args(p)
    p.add_argument("--out", help="runs folder (default: $PGOLF_RUNS or ./runs)")
    p.add_argument("--name", help="run directory name (default: time-recipe-seed)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run paused by train.segment_seconds/steps "
                                                        "(same number of processes)")
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser("eval", help="score a saved artifact on a shard set",
                       **_examples("pgolf eval runs/RUN/model.pgz", "pgolf eval model.pgz --data DIR --mode sliding",
                                   "pgolf eval model.pgz --mode sliding --by-source golfbench_val.jsonl.xz"))
    p.add_argument("artifact")
    p.add_argument("--data", help="shard folder (default: the data the run used, if it is still there)")
    p.add_argument("--tokenizer")
    p.add_argument("--mode", action="append", choices=["plain", "sliding", "ttt"],
                   help="eval mode(s); default: those the run used")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="eval.KEY=VALUE")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--by-source", metavar="TEXT.jsonl", help="also each mode's score per source: the val documents "
                   "as JSON lines with a \"source\" field, in the order the val set was built from them (golfbench's "
                   "text/golfbench_val.jsonl.xz: fineweb and wiki)")
    p.set_defaults(fn=cmd_eval)

    p = sub.add_parser("recipes", help="describe every recipe, or print one's full config",
                       **_examples("pgolf recipes", "pgolf recipes best > best.json   # then: pgolf train --config "
                                   "best.json"))
    p.add_argument("name", nargs="?")
    p.set_defaults(fn=cmd_recipes)

    p = sub.add_parser("pack", help="build the single-file train_gpt.py for a recipe")
    _add_config_args(p)
    p.add_argument("-o", "--output", default="train_gpt.py")
    p.add_argument("--plain", action="store_true", help="readable sources instead of the LZMA+base85 blob")
    p.add_argument("--no-minify", action="store_true", help="the blob holds the sources with their docstrings and "
                                                             "comments (default: minified, the counted form)")
    p.set_defaults(fn=cmd_pack)

    p = sub.add_parser("predict", help="predict a recipe's artifact bytes and fitted policy before training")
    _add_config_args(p)
    p.add_argument("--vocab", type=int, default=1024, help="vocab size when the recipe takes it from the tokenizer "
                                                            "(default 1024, the challenge's sp1024)")
    p.set_defaults(fn=cmd_predict)

    try:
        from . import tools  # not inside a packed train_gpt.py, which only trains
    except ImportError:
        tools = None
    if tools is not None:
        tools.add_parsers(sub)
    return ap


GROUP_SEPARATOR = "::"  # `pgolf compare A -- B`: argparse swallows "--", so it is renamed before parsing


def _quiet_stdout() -> None:
    """The reader of a pipe left (``pgolf inspect ... | head``): the rest goes to /dev/null, no traceback at exit."""
    try:
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["compare"]:
        argv = [GROUP_SEPARATOR if a == "--" else a for a in argv]
    cmd = ""
    rank0 = int(os.environ.get("RANK", "0")) == 0
    if "RANK" in os.environ and not faulthandler.is_enabled():
        try:  # under torchrun: a rank killed by a signal (SIGABRT, SIGSEGV) prints where each thread was
            faulthandler.enable(all_threads=True)
        except (AttributeError, ValueError, OSError):  # a stderr without a file descriptor
            pass
    try:
        args = build_parser().parse_args(argv)
        cmd = args.cmd
        rc = int(args.fn(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler below
        return rc
    except BrokenPipeError:
        _quiet_stdout()
        return EXIT_OK
    except (InputError, FileNotFoundError) as e:
        if os.environ.get("PGOLF_DEBUG"):
            raise
        if not getattr(e, "quiet", False) and not (isinstance(e, ConfigError) and not rank0):
            print(f"pgolf {cmd}: error: {e}", file=sys.stderr)  # once: every rank raises the same
        return EXIT_OVER_BUDGET if isinstance(e, OverBudget) else EXIT_INPUT
    except Interrupted as e:
        print(f"pgolf {cmd}: {e}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:  # Ctrl-C outside a training loop (which has its own handler): no traceback
        if rank0:
            print(f"pgolf {cmd}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def entry(argv: list[str] | None = None) -> None:
    """The program's exit (the ``pgolf`` command, ``python -m pgolf``, a packed train_gpt.py): under torchrun
    without the interpreter's teardown (``dist.exit_process``)."""
    rc = main(argv)
    if "RANK" in os.environ:
        from .dist import exit_process

        exit_process(rc)
    sys.exit(rc)


if __name__ == "__main__":
    entry()
