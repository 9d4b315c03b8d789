"""Subcommands beyond training: the data pipeline, the submission tooling and the audit (not packed into
train_gpt.py)."""

from __future__ import annotations


def add_parsers(sub) -> None:
    from . import audit, datasets, submission

    datasets.add_parsers(sub)
    submission.add_parsers(sub)
    audit.add_parsers(sub)
