"""nmt: Transformer translation models with pluggable residual (skip) connections."""

__version__ = "0.1.0"
