"""Subcommands beyond training: sampling, config keys, plots, the data pipeline, the submission tooling, the audit,
the step profiler and the technique table (not packed into train_gpt.py)."""

from __future__ import annotations


def add_parsers(sub) -> None:
    from . import audit, bench, datasets, keys, plots, requant, sample, submission, techniques

    sample.add_parsers(sub)
    keys.add_parsers(sub)
    plots.add_parsers(sub)
    datasets.add_parsers(sub)
    submission.add_parsers(sub)
    audit.add_parsers(sub)
    bench.add_parsers(sub)
    techniques.add_parsers(sub)
    requant.add_parsers(sub)


def document_sources(path):
    """The val documents' sources for ``pgolf eval --by-source`` (``pgolf.datasets``), reached through here so that
    a packed train_gpt.py, which carries no data pipeline, stays without it."""
    from .datasets import document_sources as sources

    return sources(path)
