"""pgolf: parameter golf as a library -- train the best LM whose artifact fits in 16,000,000 bytes."""

__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "load":  # pgolf.load (pgolf.sample), imported on first use: `import pgolf` does not import torch
        from .sample import load

        return load
    raise AttributeError(f"module 'pgolf' has no attribute {name!r}")
