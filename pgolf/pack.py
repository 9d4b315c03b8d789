"""``pgolf pack``: build the single-file ``train_gpt.py`` the challenge wants, as an output of the package.

The file holds the package modules that training imports -- the import closure of ``pgolf.cli``, found by reading
the modules' import statements, minus the tool subcommands (``NOT_PACKED``) -- compressed with LZMA and base85
(the challenge's usual self-extracting form, or as plain text with ``compress=False``), and the recipe's config.
Its import hook serves ``pgolf.*`` from those sources and refuses any other ``pgolf`` module, so the file never
falls back on an installed pgolf: it runs where pgolf is not installed, and runs the very code ``pgolf train`` ran:

    torchrun --standalone --nproc_per_node=8 train_gpt.py [--data DIR] [--seed N] [--set key=value ...]

Every run writes this file into its run directory when it starts (``train_gpt.py``): its bytes are the run's code
bytes, and ``pgolf submit`` ships that very file. The config is packed without machine paths and with the default
seed (the seed is a run argument), so runs of one recipe that differ only in seed trained the same file.
"""

from __future__ import annotations

import ast
import base64
import importlib.util
import json
import lzma

from .config import Config, TrainConfig

ROOT = ("__init__", "__main__", "cli")  # what the packed file executes
NOT_PACKED = ("tools", "sample", "plots")  # beyond training: subcommands (data, submit, ...) that cli imports
# optionally, pgolf.load and sampling, and the plots (a run of the packed file writes no loss.png)

_TEMPLATE = '''#!/usr/bin/env python3
"""train_gpt.py for recipe {name!r}, built by `pgolf pack` from pgolf {version}. Do not edit: it is a build
output of the pgolf package (edit the package and pack again).
Run: torchrun --standalone --nproc_per_node=8 train_gpt.py [--data DIR] [--seed N] [--set key=value ...]"""
import importlib.abc, importlib.util, json, sys
{decoder}
class _PgolfSource(importlib.abc.MetaPathFinder, importlib.abc.InspectLoader):
    def find_spec(self, name, path=None, target=None):
        if name != "pgolf" and not name.startswith("pgolf."):
            return None
        mod = "__init__" if name == "pgolf" else name[6:]
        if mod not in SOURCES:  # never an installed pgolf: this file runs its own code or none
            raise ModuleNotFoundError(name + " is not packed into this file", name=name)
        return importlib.util.spec_from_loader(name, self, is_package=name == "pgolf")
    def get_source(self, name):
        return SOURCES["__init__" if name == "pgolf" else name[6:]]
    def exec_module(self, module):
        exec(compile(self.get_source(module.__name__), "<pgolf:" + module.__name__ + ">", "exec"), module.__dict__)
sys.meta_path.insert(0, _PgolfSource())
CONFIG = json.loads({config!r})
if __name__ == "__main__":
    from pgolf.cli import entry
    entry(["train", "--config-json", json.dumps(CONFIG)] + sys.argv[1:])
'''


def _source(mod: str) -> str:
    full = "pgolf" if mod == "__init__" else f"pgolf.{mod}"
    spec = importlib.util.find_spec(full)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot find the source of {full}")
    src = spec.loader.get_source(full)
    if src is None:
        raise RuntimeError(f"no source for {full} (installed without .py files?)")
    return src


def _imports(src: str) -> set[str]:
    """The pgolf modules a source imports, at module level or inside functions."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level == 0 and not (base == "pgolf" or base.startswith("pgolf.")):
                continue
            base = base.removeprefix("pgolf").lstrip(".") if node.level == 0 else base
            if base:
                out.add(base.split(".")[0])
            else:  # from . import a, b (modules; package attributes such as __version__ are not)
                out.update(a.name for a in node.names if not a.name.startswith("__"))
        elif isinstance(node, ast.Import):
            out.update(a.name.split(".")[1] for a in node.names if a.name.startswith("pgolf."))
    return out


def packed_modules() -> dict[str, str]:
    """The import closure of ``ROOT`` without ``NOT_PACKED``: module name -> source."""
    sources: dict[str, str] = {}
    todo = list(ROOT)
    while todo:
        mod = todo.pop()
        if mod in sources or mod in NOT_PACKED:
            continue
        sources[mod] = _source(mod)
        todo.extend(_imports(sources[mod]))
    return dict(sorted(sources.items()))


def minify(src: str) -> str:
    """The same program in fewer bytes: docstrings and comments gone, annotations of functions dropped, the code
    re-printed from its syntax tree (``ast.unparse``). Class-level annotations stay (dataclass fields are made of
    them). Idempotent: minifying minified code gives it back unchanged, so a run of a minified file writes that same
    file into its run directory."""
    tree = ast.parse(src)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            node.returns = None
            a = node.args
            for arg in [*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg]:
                if arg is not None:
                    arg.annotation = None
    return ast.unparse(tree) + "\n"


def packable_config(cfg: Config) -> dict:
    """The config the script embeds: machine paths cleared (resolved again where it runs), the seed at its
    default (given per run with --seed) and no tracker (it changes no number; --set train.tracker=... per run)."""
    d = cfg.to_dict()
    d["data"]["path"] = ""
    d["data"]["tokenizer"] = ""
    d["train"]["seed"] = TrainConfig.seed
    d["train"]["tracker"] = TrainConfig.tracker
    return d


def build_script(cfg: Config, compress: bool = True, minified: bool = True) -> str:
    """The packed file: by default the sources minified, LZMA-compressed and base85-encoded (the bytes the artifact
    counts); ``minified=False`` keeps the sources as they are; ``compress=False`` writes them readable (no
    minification either)."""
    from . import __version__

    sources = packed_modules()
    if compress and minified:
        sources = {k: minify(v) for k, v in sources.items()}
    if compress:
        blob = base64.b85encode(lzma.compress(json.dumps(sources, sort_keys=True).encode(), preset=9 | lzma.PRESET_EXTREME))
        decoder = f'import base64, lzma\nSOURCES = json.loads(lzma.decompress(base64.b85decode({blob!r})))'
    else:
        decoder = f"SOURCES = {json.dumps(sources, sort_keys=True, indent=0)}"
    config = json.dumps(packable_config(cfg), sort_keys=True)
    return _TEMPLATE.format(name=cfg.name, version=__version__, decoder=decoder, config=config)


def embedded_config(script: str) -> dict:
    """The CONFIG a packed file carries (read, not executed)."""
    for node in ast.parse(script).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "CONFIG" for t in node.targets):
            return json.loads(node.value.args[0].value)
    raise ValueError("not a packed train_gpt.py: no CONFIG")


def code_bytes(cfg: Config, compress: bool = True, minified: bool = True) -> int:
    return len(build_script(cfg, compress, minified).encode("utf-8"))
