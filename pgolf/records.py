"""Reading what a records folder says about its runs: the logs, ``submission.json`` and the files its code needs.

A records folder of the challenge holds README.md, submission.json, the training script and its logs; ``pgolf submit``
writes the same shape. Nothing here runs the folder's code: logs are parsed line by line, the code is read with
``ast`` (self-extracting ``exec(lzma.decompress(b85decode("...")))`` wrappers are decompressed, never executed).

The log formats are the challenge scripts' own (``step:N/M ... train_time:Xms``, ``stopping_early: wallclock_cap
train_time: Xms``, ``GPTQ:collected N Hessians in Xs``, ``<label> val_loss:L val_bpb:B eval_time:Xms``,
``Serialized model <fmt>: N bytes``, ``Code size: N bytes``) and pgolf's (``stopped: step:N train_time:Xs``,
``roundtrip MODE: ... eval:Xs``, ``final (MODE, roundtrip): ...``). Many challenge logs print their own source first:
every pattern is anchored at the start of a line and needs digits where the source has format fields, so the
embedded source never matches.
"""

from __future__ import annotations

import ast
import base64
import json
import lzma
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from .config import InputError

# ---------------------------------------------------------------------------------------------------------------
# runs as the logs tell them


@dataclass
class LoggedRun:
    """One run of a records folder as its log (and submission.json) tell it. Times in seconds; None = not printed."""

    label: str  # the log's file name
    seed: str | None
    train_s: float | None = None  # the training loop, as the run's own clock measured it
    steps: int | None = None  # optimizer steps of the loop
    stopped_by_clock: bool = False  # the loop ended on the wallclock cap (after the step that crossed it)
    train_extra: list[tuple[str, float]] = field(default_factory=list)  # after the loop, reading training data
    train_notes: list[str] = field(default_factory=list)  # after the loop, not reading training data
    eval_s: float | None = None  # the scored evaluation
    eval_label: str = ""
    eval_extra: list[tuple[str, float]] = field(default_factory=list)  # eval-time precomputation (counts, #2018)
    eval_notes: list[str] = field(default_factory=list)  # other evals the log ran (diagnostics)
    warmup_s: float | None = None  # compile warm-up outside the eval timer (excluded by accepted practice)
    warmup_what: str = ""  # what the warm-up ran on, as the log says ("random tokens, no val data")
    model_bytes: int | None = None  # the compressed model, as printed
    total_claimed: int | None = None  # "Total submission size ...", as printed
    code_logged: int | None = None  # the uncompressed code size the run printed
    code_compressed_logged: int | None = None  # a compressed code size the run counted instead
    val_loss: float | None = None
    val_bpb: float | None = None
    val_tokens: int | None = None  # validation tokens the run loaded / scored, as printed
    transform: str = ""  # a byte sidecar or case transform the log shows
    scores: list[tuple[str, float, float, float | None]] = field(default_factory=list)  # label, loss, bpb, eval s
    source_embedded: str = ""  # the log text (to find the shipped source in it)


_TS = r"^(?:\d{9,}\.\d+\s+)?"  # an optional epoch-seconds prefix some logs carry
_NUM = r"(\d+(?:\.\d+)?)"
_PATTERNS = {
    "stop_ms": re.compile(_TS + r"stopping_early: wallclock_cap train_time: ?" + _NUM + r"ms step: ?(\d+)/(\d+)"),
    "step_time": re.compile(_TS + r"(?:step:)?(\d+)/(\d+) .*?\btrain_time: ?" + _NUM + r"(ms|m|s)\b"),
    "pgolf_stop": re.compile(_TS + r"stopped: step:(\d+) train_time:" + _NUM + r"s"),
    "hessians": re.compile(_TS + r"GPTQ:collected \d+ Hessians in " + _NUM + r"s"),
    "calibrated": re.compile(_TS + r"gptq:calibrated \d+ layers in " + _NUM + r"s"),
    "selfgen": re.compile(_TS + r"gptq:generated \d+ sequences in " + _NUM + r"s"),
    "gptq_done": re.compile(_TS + r"gptq:done in " + _NUM + r"s"),
    "ema": re.compile(_TS + r"(?:ema:applying EMA weights|weights: (?:EMA|SWA) over \d+ updates applied)"),
    "score": re.compile(_TS + r"(?P<label>[A-Za-z][\w\-]*(?: [\w\-:.]+)*?):? val_loss: ?(?P<loss>\d+\.\d+) "
                              r"val_bpb: ?(?P<bpb>\d+\.\d+)(?P<rest>.*)$"),
    "eval_ms": re.compile(r"\beval_time: ?(\d+)ms"),
    "pgolf_eval": re.compile(r"\beval:" + _NUM + r"s"),
    "total_eval": re.compile(_TS + r"total_eval_time: ?" + _NUM + r"s"),
    "precompute": re.compile(_TS + r"(\S*precompute\S*)\b.*?\belapsed=" + _NUM + r"s"),
    "warmup": re.compile(_TS + r"(\S+):compile warmup done \(" + _NUM + r"s\)"),
    "warmup_what": re.compile(_TS + r"\S+:warming up compile \((.*)\)"),
    "model_bytes": re.compile(_TS + r"Serialized model (?P<fmt>[^:]+): (?P<n>\d+) bytes"),
    "pgolf_artifact": re.compile(_TS + r"artifact: \S+ model:([\d,]+) bytes code:([\d,]+) total:([\d,]+)"),
    "code": re.compile(_TS + r"Code size(?: \(uncompressed\))?: (\d+) bytes"),
    "code_compressed": re.compile(_TS + r"Code size \(compressed\): (\d+) bytes"),
    "total": re.compile(_TS + r"Total submission size[^:]*: (\d+) bytes"),
    "val_tokens": re.compile(_TS + r"(?:val_tokens: ?(\d+)|val_loader:.*\btokens:(\d+))"),
    "sidecar": re.compile(r"val_bytes_files|fineweb_val_bytes_|caseops", re.IGNORECASE),
    "seed": re.compile(r"^\s*seed: ?(\d+)\s*$"),
    "pgolf_final": re.compile(_TS + r"final \((\w+), roundtrip\): val_loss:" + _NUM + " val_bpb:" + _NUM),
}
# Scores that are diagnostics, not the submission's number (pre-quantization, post-EMA probes, in-training vals).
_DIAGNOSTIC = re.compile(r"^(step\b|diagnostic|DIAGNOSTIC|pre-quant|prequant|pre-quantization|post_ema|val\b)")


def parse_log(path: Path) -> LoggedRun | None:
    """What one log says about its run; None when it holds no training or scoring line (not a run's log)."""
    text = path.read_text(encoding="utf-8", errors="replace")
    m = re.search(r"seed_?(\d+)", path.name)
    run = LoggedRun(label=path.name, seed=m.group(1) if m else None, source_embedded=text)
    step_s: float | None = None
    step_n = 0
    timed_scores: list[tuple[str, float]] = []
    pgolf_final_mode = ""
    pgolf_evals: dict[str, tuple[float, float, float]] = {}
    calibration_on_train = False
    for raw in text.splitlines():
        line = raw.rstrip()
        if run.seed is None and (mm := _PATTERNS["seed"].match(line)):
            run.seed = mm.group(1)
        if mm := _PATTERNS["stop_ms"].match(line):
            run.train_s, run.steps, run.stopped_by_clock = float(mm.group(1)) / 1000.0, int(mm.group(2)), True
        elif mm := _PATTERNS["pgolf_stop"].match(line):
            run.train_s, run.steps = float(mm.group(2)), int(mm.group(1))
        elif mm := _PATTERNS["step_time"].match(line):
            value, unit = float(mm.group(3)), mm.group(4)
            step_s = value / 1000.0 if unit == "ms" else value * 60.0 if unit == "m" else value
            step_n = int(mm.group(1))
        if "calibrat" in line and "training data" in line:
            calibration_on_train = True
        if mm := _PATTERNS["hessians"].match(line):
            run.train_extra.append(("GPTQ Hessians from training data", float(mm.group(1))))
        elif mm := _PATTERNS["calibrated"].match(line):
            what = "GPTQ calibration on training data" if calibration_on_train else "GPTQ calibration"
            run.train_extra.append((what, float(mm.group(1))))
        elif mm := _PATTERNS["selfgen"].match(line):
            run.train_notes.append(f"GPTQ calibration on self-generated sequences {float(mm.group(1)):.1f}s "
                                   "(no training data: not counted)")
        elif _PATTERNS["ema"].match(line):
            if not any(n.startswith("EMA") for n in run.train_notes):
                run.train_notes.append("EMA/SWA weights applied after the loop (a copy, no data read)")
        if mm := _PATTERNS["model_bytes"].match(line):
            fmt = mm.group("fmt").strip()
            if fmt:  # "Serialized model: N" is the raw float model; a format names the shipped one
                run.model_bytes = int(mm.group("n"))
        elif mm := _PATTERNS["pgolf_artifact"].match(line):
            run.model_bytes = int(mm.group(1).replace(",", ""))
            run.code_logged = int(mm.group(2).replace(",", ""))
            run.total_claimed = int(mm.group(3).replace(",", ""))
        if mm := _PATTERNS["code"].match(line):
            run.code_logged = int(mm.group(1))
        if mm := _PATTERNS["code_compressed"].match(line):
            run.code_compressed_logged = int(mm.group(1))
        if mm := _PATTERNS["total"].match(line):
            run.total_claimed = int(mm.group(1))
        if mm := _PATTERNS["val_tokens"].match(line):
            run.val_tokens = int(mm.group(1) or mm.group(2))
        if not run.transform and _PATTERNS["sidecar"].search(line) and not any(c in line for c in "=()[]{}"):
            run.transform = line.strip()[:100]  # a hyperparameter line naming a byte sidecar or case transform
        if mm := _PATTERNS["precompute"].match(line):
            run.eval_extra.append((mm.group(1), float(mm.group(2))))
        if mm := _PATTERNS["warmup_what"].match(line):
            run.warmup_what = mm.group(1)
        if mm := _PATTERNS["warmup"].match(line):
            run.warmup_s = (run.warmup_s or 0.0) + float(mm.group(2))
        if mm := _PATTERNS["total_eval"].match(line):
            total = float(mm.group(1))
            if run.eval_s is None or total > run.eval_s:
                run.eval_s, run.eval_label = total, "total_eval_time"
        if mm := _PATTERNS["pgolf_final"].match(line):
            pgolf_final_mode = mm.group(1)
            run.val_loss, run.val_bpb = float(mm.group(2)), float(mm.group(3))
            continue
        if mm := _PATTERNS["score"].match(line):
            label = mm.group("label").rstrip(":")
            if _DIAGNOSTIC.match(label):
                continue
            rest = mm.group("rest")
            if label.startswith("roundtrip ") and (pe := _PATTERNS["pgolf_eval"].search(rest)):
                pgolf_evals[label.split()[1]] = (float(mm.group("loss")), float(mm.group("bpb")), float(pe.group(1)))
                continue
            run.val_loss, run.val_bpb = float(mm.group("loss")), float(mm.group("bpb"))
            et = _PATTERNS["eval_ms"].search(rest)
            run.scores.append((label, run.val_loss, run.val_bpb, float(et.group(1)) / 1000.0 if et else None))
            if et:
                timed_scores.append((label, float(et.group(1)) / 1000.0))
    if run.train_s is None and step_s is not None:
        run.train_s, run.steps = step_s, step_n
    if pgolf_final_mode and pgolf_final_mode in pgolf_evals:
        run.val_loss, run.val_bpb, run.eval_s = pgolf_evals[pgolf_final_mode]
        run.eval_label = f"roundtrip {pgolf_final_mode}"
    elif timed_scores and (run.eval_s is None or timed_scores[-1][1] > run.eval_s):
        run.eval_label, run.eval_s = timed_scores[-1]
    others = [f"{label} {s:.1f}s" for label, s in timed_scores[:-1]] + \
        [f"roundtrip {m} {e:.1f}s" for m, (_, _, e) in pgolf_evals.items() if m != pgolf_final_mode]
    if others:
        run.eval_notes.append("other evals, not the submitted score: " + ", ".join(others))
    if run.train_s is None and run.val_bpb is None:
        return None
    return run


def choose_score(run: LoggedRun, bpb: float) -> bool:
    """Make the log's score that the submission reports (``bpb``, to the printed digits) the run's score, with the
    eval time of its line (or of the timed line it is the exact print of); False when no line matches."""
    for i in range(len(run.scores) - 1, -1, -1):
        label, loss, b, t = run.scores[i]
        if abs(b - bpb) <= 5e-5 * max(1.0, bpb):
            run.val_loss, run.val_bpb = loss, b
            if t is None and i > 0 and run.scores[i - 1][3] is not None:
                label, t = run.scores[i - 1][0], run.scores[i - 1][3]
            if t is not None and run.eval_label != "total_eval_time":  # the total, when printed, covers it
                run.eval_label, run.eval_s = label, t
            return True
    return False


LOG_SUFFIXES = (".log", ".txt")
NOT_LOGS = ("requirements.txt", "readme.txt", "license.txt")


def folder_logs(folder: Path) -> list[LoggedRun]:
    """The runs of a records folder: every log at its top level or in ``logs/`` that shows a run."""
    files = sorted(p for p in [*folder.iterdir(), *(folder / "logs").glob("*")]
                   if p.is_file() and p.suffix in LOG_SUFFIXES and p.name.lower() not in NOT_LOGS)
    return [r for r in map(parse_log, files) if r is not None]


def read_submission(folder: Path) -> dict:
    p = folder / "submission.json"
    if not p.is_file():
        # some folders name it submission_<what>.json
        found = sorted(folder.glob("submission*.json"))
        if not found:
            return {}
        p = found[0]
    try:
        meta = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"{p}: unreadable ({e})") from None
    return meta if isinstance(meta, dict) else {}


def seed_results(meta: dict) -> dict[str, dict]:
    """Per-seed results from a submission.json (``seed_results`` in pgolf's and most records, ``seeds`` in some)."""
    for key in ("seed_results", "seeds"):
        v = meta.get(key)
        if isinstance(v, dict) and v and all(isinstance(x, dict) for x in v.values()):
            return {str(k): x for k, x in v.items()}
    return {}


def per_seed_losses(meta: dict, runs: list[LoggedRun] | None = None) -> list[float]:
    """Per-seed val_loss (nats): from submission.json when it lists them, else from the logs."""
    per = seed_results(meta)
    vals = [float(x["val_loss"]) for x in per.values() if isinstance(x.get("val_loss"), (int, float))]
    if len(vals) >= 2 or not runs:
        return vals
    # only val_bpb per seed: the log whose score is that number gives its val_loss (a folder may hold other logs)
    matched = []
    for want in (float(x["val_bpb"]) for x in per.values() if isinstance(x.get("val_bpb"), (int, float))):
        hit = next((r.val_loss for r in runs if r.val_loss is not None and r.val_bpb is not None
                    and abs(r.val_bpb - want) <= 5e-5 * max(1.0, want)), None)
        if hit is not None:
            matched.append(hit)
    if len(matched) >= 2 and len(matched) == len(per):
        return matched
    return [r.val_loss for r in runs if r.val_loss is not None]


# ---------------------------------------------------------------------------------------------------------------
# the files the code needs


CODE_SUFFIXES = {".py", ".c", ".cc", ".cpp", ".cxx", ".cu", ".cuh", ".h", ".hpp", ".so", ".pyx", ".pyd", ".sh"}
# Shipped beside the code but never counted: the record's paperwork, logs, tokenizers (data, like the shards) and
# the artifacts a run writes (the model is counted separately, as the model).
NOT_COUNTED_SUFFIXES = {".md", ".log", ".txt", ".json", ".jsonl", ".png", ".jpg", ".svg", ".lock", ".model", ".vocab",
                        ".pgz", ".ptz", ".pt", ".bin"}
TOKENIZER_SUFFIXES = {".model", ".vocab"}


@dataclass
class CodeFiles:
    """The files a folder's entry script needs, found statically."""

    entry: Path
    counted: dict[str, int]  # relative path -> bytes, entry first
    reasons: dict[str, str]  # relative path -> why it is counted
    tokenizers: list[str]  # tokenizer files the code names (data: not counted)
    not_needed: list[str]  # code files shipped that nothing reaches (data preparation, alternatives)
    unreadable: list[str]  # sources that could not be parsed or decompressed (their needs are unknown)
    sources: dict[str, str]  # relative path -> decoded Python source, for the other checks

    @property
    def code_bytes(self) -> int:
        return sum(self.counted.values())


def find_entry(folder: Path) -> Path | None:
    """train_gpt.py, else the only train*.py of the folder."""
    if (folder / "train_gpt.py").is_file():
        return folder / "train_gpt.py"
    cands = sorted(p for p in folder.glob("*.py") if p.name.startswith("train"))
    return cands[0] if len(cands) == 1 else None


def decode_blobs(tree: ast.AST) -> list[str]:
    """Sources hidden in a self-extracting wrapper: every long string literal that decodes (base85 or base64, then
    lzma, raw LZMA2, zlib or brotli when importable) to text. A pgolf packed file's blob is a JSON object of module
    sources; each becomes one source."""
    out = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes)) and len(node.value) >= 100):
            continue
        raw = node.value.encode() if isinstance(node.value, str) else node.value
        text = _decode(raw)
        if text is None:  # plain sources kept as strings (pgolf pack --plain)
            if isinstance(node.value, str) and "import " in node.value and "def " in node.value:
                out.append(node.value)
            continue
        try:
            obj = json.loads(text)
        except ValueError:
            obj = None
        if isinstance(obj, dict) and obj and all(isinstance(v, str) for v in obj.values()):
            out.extend(obj.values())
        else:
            out.append(text)
    return out


def _decode(raw: bytes) -> str | None:
    for unb in (base64.b85decode, base64.b64decode):
        try:
            data = unb(raw)
        except ValueError:
            continue
        for fn in _DECOMPRESSORS:
            try:
                return fn(data).decode("utf-8")
            except Exception:  # each decompressor raises its own error types on foreign data
                continue
    return None


def _brotli(data: bytes) -> bytes:
    import brotli  # optional: not a pgolf dependency; records that use it are decoded when it is installed

    return brotli.decompress(data)


_DECOMPRESSORS = (
    lzma.decompress,
    lambda d: lzma.decompress(d, format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2}]),
    zlib.decompress,
    _brotli,
)


def _names_in_python(src: str) -> tuple[set[str], set[str], list[str]] | None:
    """(top-level modules imported, relative imports, string literals) of a source and of the sources its
    wrappers hide; None when it does not parse."""
    try:
        tree = ast.parse(src)
    except SyntaxError:
        return _names_by_pattern(src)
    mods: set[str] = set()
    rel: set[str] = set()
    lits: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            mods.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                rel.update([node.module.split(".")[0]] if node.module else [a.name for a in node.names])
            elif node.module:
                mods.add(node.module.split(".")[0])
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and 0 < len(node.value) < 300:
            lits.append(node.value)
        elif isinstance(node, ast.Call) and getattr(node.func, "id", "") == "__import__" and node.args and \
                isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            mods.add(node.args[0].value.split(".")[0])
    for inner in decode_blobs(tree):
        sub = _names_in_python(inner)
        if sub is not None:
            mods |= sub[0]
            rel |= sub[1]
            lits += sub[2]
    return mods, rel, lits


_IMPORT_FROM = re.compile(r"(?:^|[;:]|\n)[ \t]*from[ \t]+(\.*)([\w.]*)[ \t]+import\b")
_IMPORT = re.compile(r"(?:^|[;:]|\n)[ \t]*import[ \t]+([\w.]+(?:[ \t]*(?:as[ \t]+\w+)?[ \t]*,[ \t]*[\w.]+)*)")
_STRINGS = re.compile(r"'([^'\\\n]{1,299})'|\"([^\"\\\n]{1,299})\"")
_LONG_STRINGS = re.compile(r"'([^'\\\n]{100,})'|\"([^\"\\\n]{100,})\"")


def _names_by_pattern(src: str) -> tuple[set[str], set[str], list[str]] | None:
    """The same as ``_names_in_python`` by regular expressions, for a source this Python cannot parse (a record run
    on a newer Python: its f-string syntax); None when nothing looks like Python."""
    mods: set[str] = set()
    rel: set[str] = set()
    for dots, mod in _IMPORT_FROM.findall(src):
        if mod:
            (rel if dots else mods).add(mod.split(".")[0])
    for group in _IMPORT.findall(src):
        mods.update(part.split()[0].split(".")[0] for part in group.split(",") if part.strip())
    if not mods and not rel:
        return None
    lits = [a or b for a, b in _STRINGS.findall(src)]
    for a, b in _LONG_STRINGS.findall(src):
        text = _decode((a or b).encode())
        sub = _names_in_python(text) if text else None
        if sub is not None:
            mods |= sub[0]
            rel |= sub[1]
            lits += sub[2]
    return mods, rel, lits


_C_NAMES = re.compile(r'#\s*include\s*"([^"]+)"|"([^"\n]{1,200})"')


def needed_files(folder: Path, entry: Path | None = None) -> CodeFiles:
    """Walk from the entry script: local imports (``x`` -> x.py, x/ package, x*.so) and files its string literals
    name (by relative path, file name or folder) are needed to run; C/C++ sources add their quoted includes and
    literals. Tokenizers, logs, paperwork and run outputs are never counted (``NOT_COUNTED_SUFFIXES``)."""
    entry = entry or find_entry(folder)
    if entry is None:
        raise InputError(f"{folder}: no train_gpt.py (and not exactly one train*.py) to start from")
    files = {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*"))
             if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)}
    by_name: dict[str, list[str]] = {}
    for rel in files:
        by_name.setdefault(Path(rel).name, []).append(rel)
    dirs = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_dir()}
    start = entry.relative_to(folder).as_posix()
    counted: dict[str, int] = {}
    reasons: dict[str, str] = {start: "the entry script"}
    tokenizers: list[str] = []
    unreadable: list[str] = []
    sources: dict[str, str] = {}
    todo = [start]

    def need(rel: str, why: str) -> None:
        suffix = Path(rel).suffix.lower()
        if suffix in TOKENIZER_SUFFIXES:
            if rel not in tokenizers:
                tokenizers.append(rel)
            return
        if suffix in NOT_COUNTED_SUFFIXES or rel in counted or rel in todo:
            return
        reasons.setdefault(rel, why)
        todo.append(rel)

    while todo:
        rel = todo.pop(0)
        path = files[rel]
        counted[rel] = path.stat().st_size
        base = Path(rel).parent
        if path.suffix == ".py":
            src = path.read_text(encoding="utf-8", errors="replace")
            names = _names_in_python(src)
            if names is None:
                unreadable.append(rel)
                continue
            sources[rel] = src
            mods, relmods, lits = names
            for mod in sorted(mods | relmods):
                for cand in (f"{mod}.py", f"{mod}/__init__.py", (base / f"{mod}.py").as_posix()):
                    if cand in files:
                        need(cand, f"imported by {rel}")
                if f"{mod}" in dirs:  # a package: all its Python files
                    for f in files:
                        if f.startswith(f"{mod}/") and f.endswith(".py"):
                            need(f, f"package {mod} imported by {rel}")
                for f in files:
                    if Path(f).parent == Path(".") and Path(f).name.startswith(f"{mod}.") and f.endswith(".so"):
                        need(f, f"extension imported by {rel}")
        elif path.suffix in CODE_SUFFIXES and path.suffix != ".so":
            text = path.read_text(encoding="utf-8", errors="replace")
            lits = [a or b for a, b in _C_NAMES.findall(text)]
        else:
            continue
        for lit in lits:
            s = lit.strip().removeprefix("./")
            if not s or "\n" in s:
                continue
            if s in files:
                need(s, f"named in {rel}")
            elif s in by_name and "/" not in s:
                for f in by_name[s]:
                    need(f, f"named in {rel}")
            elif s.rstrip("/") in dirs:
                d = s.rstrip("/")
                for f in files:
                    if f.startswith(d + "/") and Path(f).suffix.lower() in CODE_SUFFIXES:
                        need(f, f"folder {d}/ named in {rel}")
    shipped_code = [r for r in files if Path(r).suffix.lower() in CODE_SUFFIXES]
    not_needed = [r for r in shipped_code if r not in counted]
    return CodeFiles(entry, counted, {k: v for k, v in reasons.items() if k in counted}, tokenizers, not_needed,
                     unreadable, sources)


def self_extracting_bytes(data: bytes, python: bool = False) -> int:
    """Bytes of a self-extracting form of a file: ``exec(lzma.decompress(base64.b85decode("...")))`` (the wrapper
    the challenge's records count their code as; frontier.md §2), of the source with its comments and layout
    dropped (``ast.unparse``) when it is Python this interpreter parses; never more than the file itself."""
    best = data
    if python:
        try:
            best = ast.unparse(ast.parse(data.decode("utf-8"))).encode("utf-8")
        except (SyntaxError, UnicodeDecodeError, ValueError):
            best = data
    blob = base64.b85encode(lzma.compress(best, preset=9 | lzma.PRESET_EXTREME))
    wrapper = b'import lzma,base64\nexec(lzma.decompress(base64.b85decode("' + blob + b'")))\n'
    return min(len(data), len(wrapper))
