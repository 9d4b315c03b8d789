"""``pgolf config keys | show``: every config key with its type, value and meaning; a resolved config as a file.

    pgolf config keys                      # every --set key: type, default, meaning
    pgolf config keys --recipe best        # ... with the recipe's values (* where they differ from the default)
    pgolf config show --recipe best --set model.num_layers=10 --format toml > my.toml   # then: --config my.toml

The meaning of a key is the comment on its line in pgolf/config.py, read from that file's source: the dataclass
is the one place a field is declared, typed, defaulted and explained.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib.util
import io
import json
import tokenize

from .config import SECTIONS, Config


def field_meanings() -> dict[str, str]:
    """``section.field`` (and ``name``) -> the trailing comment of the field's line in pgolf/config.py."""
    src = importlib.util.find_spec("pgolf.config").loader.get_source("pgolf.config")
    comments = {t.start[0]: t.string.lstrip("#").strip()
                for t in tokenize.generate_tokens(io.StringIO(src).readline) if t.type == tokenize.COMMENT}
    section_of = {typ.__name__: sec for sec, typ in SECTIONS.items()}
    out = {}
    for node in ast.parse(src).body:
        if not isinstance(node, ast.ClassDef) or node.name not in (*section_of, "Config"):
            continue
        for st in node.body:
            if not (isinstance(st, ast.AnnAssign) and isinstance(st.target, ast.Name)):
                continue
            if node.name in section_of:
                out[f"{section_of[node.name]}.{st.target.id}"] = comments.get(st.lineno, "")
            elif st.target.id == "name":  # Config's other fields are the sections
                out["name"] = comments.get(st.lineno, "")
    return out


def _show(v) -> str:
    """A value as ``--set`` takes it."""
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, tuple):
        return ",".join(v) or '""'
    if v == "":
        return '""'
    return str(v)


def key_rows(recipe: str | None = None) -> list[tuple[str, str, str, str, bool]]:
    """(key, type, value, meaning, differs from the default) for every field, in declaration order; the value is
    the recipe's when one is named, else the default."""
    from .recipes import get_recipe

    meanings = field_meanings()
    cfg = get_recipe(recipe) if recipe else None
    rows = [("name", "str", cfg.name if cfg else Config.name, meanings.get("name", ""), False)]
    for sec, typ in SECTIONS.items():
        default = typ()
        for f in dataclasses.fields(typ):
            key = f"{sec}.{f.name}"
            dv = getattr(default, f.name)
            v = getattr(getattr(cfg, sec), f.name) if cfg else dv
            differs = cfg is not None and v != dv and key != "model.train_seq_len"  # derived by validate()
            rows.append((key, str(f.type), _show(v), meanings.get(key, ""), differs))
    return rows


def to_toml(d: dict) -> str:
    """A config dict as TOML (scalars, and tuples of strings, in tables per section)."""
    def val(v) -> str:
        if isinstance(v, bool):
            return str(v).lower()
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(val(x) for x in v) + "]"
        if isinstance(v, str):
            return json.dumps(v)  # a JSON string is a valid TOML basic string
        return repr(v)

    lines = [f"name = {val(d['name'])}"]
    for sec in SECTIONS:
        lines += ["", f"[{sec}]"] + [f"{k} = {val(v)}" for k, v in d[sec].items()]
    return "\n".join(lines) + "\n"


def cmd_keys(args) -> int:
    rows = key_rows(args.recipe)
    wk, wt, wv = (max(len(r[i]) for r in rows) for i in range(3))
    what = f"recipe {args.recipe}" if args.recipe else "default"
    print(f"{'key':{wk}s}  {'type':{wt}s}  {what:{wv + 1}s}  meaning")
    for key, typ, value, meaning, differs in rows:
        print(f"{key:{wk}s}  {typ:{wt}s}  {value + ('*' if differs else ''):{wv + 1}s}  {meaning}")
    if args.recipe:
        print("\n* differs from the default. Set any key with --set KEY=VALUE (tuples: comma-separated).")
    return 0


def cmd_show(args) -> int:
    from .cli import resolve_config

    cfg = resolve_config(args)
    print(to_toml(cfg.to_dict()) if args.format == "toml" else cfg.to_json())
    return 0


def add_parsers(sub) -> None:
    from .cli import _add_config_args, _examples

    p = sub.add_parser("config", help="every config key with its type, default and meaning; a config as a file",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    csub = p.add_subparsers(dest="config_cmd", required=True, metavar="{keys,show}")
    k = csub.add_parser("keys", help="list every key: type, default (or a recipe's value), meaning",
                        **_examples("pgolf config keys", "pgolf config keys --recipe best | grep quant."))
    k.add_argument("--recipe", help="show this recipe's values")
    k.set_defaults(fn=cmd_keys)
    s = csub.add_parser("show", help="print a resolved config (recipe or file, plus --set) as JSON or TOML",
                        **_examples("pgolf config show --recipe best --format toml > best.toml",
                                    "pgolf train --config best.toml"))
    _add_config_args(s)
    s.add_argument("--format", choices=["json", "toml"], default="json")
    s.set_defaults(fn=cmd_show)
