"""Subcommands beyond training: the data pipeline and the submission tooling (not packed into train_gpt.py)."""

from __future__ import annotations

import importlib.util


def add_parsers(sub) -> None:
    from . import submission

    submission.add_parsers(sub)
    if importlib.util.find_spec("pgolf.datasets") is not None:
        from . import datasets

        datasets.add_parsers(sub)
