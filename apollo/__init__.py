"""Apollo Storage: erasure-coded, S3-compatible storage for AI data centers."""

from importlib import metadata as _metadata

try:
    # The version pyproject.toml declares, as installed: one number to bump, and what `apollo --version`,
    # the start banners and apollo_build_info report.
    __version__ = _metadata.version("apollo-storage")
except _metadata.PackageNotFoundError:  # a source tree never installed: say so rather than guess a number
    __version__ = "0+unknown"

__all__ = ["__version__"]
