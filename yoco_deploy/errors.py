"""Typed errors. Each one carries a message that says what was wrong and how to fix it.

The CLI prints ``YocoError`` messages as one line and exits non-zero; anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations

# the base lives in the ONNX Runtime leaf, which imports nothing above it
from yoco_deploy.runtime.errors import RunnerError, YocoError  # noqa: F401


class Terminated(KeyboardInterrupt):
    """SIGTERM: work was stopped (and checkpointed where possible); exit code 143."""


class ArchError(YocoError, ValueError):
    """An architecture is malformed or lies outside the search space."""


class SpaceError(YocoError, ValueError):
    """A search-space definition or override is invalid."""


class ModelLoadError(YocoError):
    """A model could not be loaded from the hub or a local directory."""


class ExportError(YocoError):
    """ONNX export, optimization or quantization failed."""


class OnnxValidationError(ExportError):
    """An ONNX model's outputs differ from PyTorch's beyond tolerance.

    ``mismatches`` lists every failing (shape, output) with its max abs difference.
    """

    def __init__(self, what: str, mismatches: list[str], tolerance: float):
        self.mismatches = mismatches
        self.tolerance = tolerance
        detail = "; ".join(mismatches)
        super().__init__(f"{what} does not match PyTorch within atol={tolerance:g}: {detail}")
