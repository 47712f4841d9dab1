"""fer-lab: train, tune, track and compare facial-emotion classifiers."""

from importlib import metadata

try:
    __version__ = metadata.version("fer-lab")
except metadata.PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
