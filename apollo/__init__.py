"""Apollo Storage: erasure-coded, S3-compatible storage for AI data centers."""

__version__ = "0.1.0"
__all__ = ["__version__"]
