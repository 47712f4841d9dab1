"""fer-lab: train, tune, track and compare facial-emotion classifiers."""

from importlib import metadata

try:
    __version__ = metadata.version("fer-lab")
except metadata.PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"


def __getattr__(name: str):
    # ``from fer_lab import Analyzer`` without importing OpenCV and MLflow for every
    # ``import fer_lab``.
    if name == "Analyzer":
        from fer_lab.analysis.analyzer import Analyzer

        return Analyzer
    raise AttributeError(f"module 'fer_lab' has no attribute {name!r}")
