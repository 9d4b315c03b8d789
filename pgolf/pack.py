"""``pgolf pack``: build the single-file ``train_gpt.py`` the challenge wants, as an output of the package.

The file holds the package modules that training needs (compressed with LZMA and base85, the challenge's usual
self-extracting form, or as plain text with ``compress=False``) and the recipe's resolved config. It installs an
import hook that serves ``pgolf.*`` from those sources, so it runs the very code ``pgolf train`` runs:

    torchrun --standalone --nproc_per_node=8 train_gpt.py [--data DIR] [--set key=value ...]

Its byte count is the code part of the artifact's total; ``pgolf train`` computes the same number for its config.
"""

from __future__ import annotations

import base64
import importlib
import json
import lzma

from .config import Config

# Modules a training run imports; data download, stats, submit and inspect are left out.
PACKED_MODULES = ("__init__", "__main__", "cli", "config", "data", "dist", "embedded", "evaluate", "model", "optim",
                  "pack", "quant", "recipes", "rundir", "schedule", "tokenizer", "train")

_TEMPLATE = '''#!/usr/bin/env python3
"""train_gpt.py for recipe {name!r}, built by `pgolf pack` from pgolf {version}. Do not edit: it is a build
output of the pgolf package (edit the package and pack again).
Run: torchrun --standalone --nproc_per_node=8 train_gpt.py [--data DIR] [--set key=value ...]"""
import importlib.abc, importlib.util, json, sys
{decoder}
class _PgolfSource(importlib.abc.MetaPathFinder, importlib.abc.InspectLoader):
    def find_spec(self, name, path=None, target=None):
        mod = "__init__" if name == "pgolf" else name[6:] if name.startswith("pgolf.") else None
        if mod in SOURCES:
            return importlib.util.spec_from_loader(name, self, is_package=name == "pgolf")
    def get_source(self, name):
        return SOURCES["__init__" if name == "pgolf" else name[6:]]
    def exec_module(self, module):
        exec(compile(self.get_source(module.__name__), "<pgolf:" + module.__name__ + ">", "exec"), module.__dict__)
sys.meta_path.insert(0, _PgolfSource())
CONFIG = json.loads({config!r})
if __name__ == "__main__":
    from pgolf.cli import main
    sys.exit(main(["train", "--config-json", json.dumps(CONFIG)] + sys.argv[1:]))
'''


def module_sources() -> dict[str, str]:
    """The packed modules' sources, from files or (inside a packed script) from the import hook."""
    out = {}
    for mod in PACKED_MODULES:
        full = "pgolf" if mod == "__init__" else f"pgolf.{mod}"
        spec = importlib.util.find_spec(full)
        if spec is None or spec.loader is None:
            raise RuntimeError(f"cannot find the source of {full}")
        src = spec.loader.get_source(full)
        if src is None:
            raise RuntimeError(f"no source for {full} (installed without .py files?)")
        out[mod] = src
    return out


def packable_config(cfg: Config) -> dict:
    """The config the script embeds: machine-specific paths cleared (resolved again where it runs)."""
    d = cfg.to_dict()
    d["data"]["path"] = ""
    d["data"]["tokenizer"] = ""
    return d


def build_script(cfg: Config, compress: bool = True) -> str:
    from . import __version__

    sources = module_sources()
    if compress:
        blob = base64.b85encode(lzma.compress(json.dumps(sources, sort_keys=True).encode(), preset=9 | lzma.PRESET_EXTREME))
        decoder = f'import base64, lzma\nSOURCES = json.loads(lzma.decompress(base64.b85decode({blob!r})))'
    else:
        decoder = f"SOURCES = {json.dumps(sources, sort_keys=True, indent=0)}"
    config = json.dumps(packable_config(cfg), sort_keys=True)
    return _TEMPLATE.format(name=cfg.name, version=__version__, decoder=decoder, config=config)


def code_bytes(cfg: Config, compress: bool = True) -> int:
    return len(build_script(cfg, compress).encode("utf-8"))
