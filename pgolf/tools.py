"""Subcommands beyond training: sampling, config keys, plots, the data pipeline and the submission tooling (not
packed into train_gpt.py)."""

from __future__ import annotations


def add_parsers(sub) -> None:
    from . import bench, datasets, keys, plots, sample, submission, techniques

    sample.add_parsers(sub)
    keys.add_parsers(sub)
    plots.add_parsers(sub)
    datasets.add_parsers(sub)
    submission.add_parsers(sub)
    bench.add_parsers(sub)
    techniques.add_parsers(sub)
