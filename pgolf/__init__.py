"""pgolf: parameter golf as a library -- train the best LM whose artifact fits in 16,000,000 bytes."""

__version__ = "0.1.0"
