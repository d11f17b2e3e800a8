"""jpegrestore: train, evaluate and run JPEG restoration models on one JPEG operator."""

__version__ = "0.1.0"
