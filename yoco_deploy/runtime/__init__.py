"""The ONNX Runtime core: session settings, feeds, timing, checksummed JSON lines and the
device runner. A leaf: it imports only the standard library, numpy and onnxruntime
(tests/test_structure.py checks), so ``profile-bundle`` can ship it to a device without
torch, and every stage above it builds its sessions and timings from it.

Names are importable from here (``runtime.SessionSpec``); submodules load on first use,
so importing the package stays as light as the CLI's ``--help`` needs.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "errors": ("YocoError", "RunnerError"),
    "session": (
        "PROVIDERS", "GPU_PROVIDERS", "SPINNING", "MAX_THREADS", "GRAPH_OPTIMIZATION",
        "SessionSpec", "OrtBackend", "recorded_session", "resolve_provider",
    ),
    "rounds": (
        "REFERENCE_ID", "Protocol", "Latency", "job_key", "make_feeds", "median_interval",
        "measure",
    ),
    "sealed": (
        "CHECKSUM_KEY", "RowCheck", "row_sum", "sealed_line", "parse_row", "checked_rows",
        "set_aside", "repair_note", "append_line",
    ),
    "measurements": ("MEASUREMENTS_SCHEMA", "ROW_KINDS", "MeasurementLog", "measurement_problem"),
    "host": ("cpu_model", "host_fingerprint", "device_fingerprint"),
    "runner": ("Job", "run_jobs", "main"),
}  # fmt: skip
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}
__all__ = sorted(_HOME_OF)


def __getattr__(name: str) -> Any:
    module = _HOME_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
