"""Benchmarks' in-process timing: workloads timed round-robin, as ``Latency`` values (the
device runner's one latency type), and the machine they ran on."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from yoco_deploy.device.runner import Latency


def time_once_ms(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def time_interleaved(
    workloads: dict[str, Callable[[], object]], warmup: int = 5, repeats: int = 30
) -> dict[str, Latency]:
    """Time several workloads round-robin, so drift and other tenants' load hit them alike."""
    for fn in workloads.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in workloads}
    for _ in range(repeats):
        for name, fn in workloads.items():
            samples[name].append(time_once_ms(fn))
    return {name: Latency.from_samples(s) for name, s in samples.items()}


def machine_info() -> dict[str, object]:
    """What a timing depends on: the host, torch, and the load while it ran."""
    import torch

    from yoco_deploy.device.runner import host_fingerprint

    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {
        **host_fingerprint(),
        "torch": torch.__version__,
        "loadavg_1_5_15": [round(x, 2) for x in load],
    }
