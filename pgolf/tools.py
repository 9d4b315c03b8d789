"""Subcommands beyond training: the data pipeline and the submission tooling (not packed into train_gpt.py)."""

from __future__ import annotations


def add_parsers(sub) -> None:
    from . import bench, datasets, submission

    datasets.add_parsers(sub)
    submission.add_parsers(sub)
    bench.add_parsers(sub)
