"""The package's error base, here so that the ONNX Runtime leaf needs nothing above it.

The CLI prints ``YocoError`` messages as one line and exits non-zero; anything else is a
bug and keeps its traceback. The package's other errors are in :mod:`yoco_deploy.errors`.
"""

from __future__ import annotations


class YocoError(Exception):
    """Base of every error caused by user input or environment, not by a bug."""


class RunnerError(YocoError):
    """A problem the user can fix (bad file, missing provider); printed as one line."""
