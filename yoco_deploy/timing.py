"""Latency as a value (median, p90, spread) and the machine it was measured on."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class LatencyStats:
    """Summary of repeated timings of one workload, in milliseconds."""

    median_ms: float
    p90_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    runs: int

    @property
    def cv(self) -> float:
        """Coefficient of variation: spread relative to the mean."""
        return self.std_ms / self.mean_ms if self.mean_ms else 0.0

    @classmethod
    def from_samples(cls, samples_ms: list[float] | np.ndarray) -> LatencyStats:
        a = np.asarray(samples_ms, dtype=float)
        if a.size == 0:
            raise ValueError("no timing samples")
        return cls(
            median_ms=float(np.median(a)),
            p90_ms=float(np.percentile(a, 90)),
            mean_ms=float(a.mean()),
            std_ms=float(a.std(ddof=1)) if a.size > 1 else 0.0,
            min_ms=float(a.min()),
            runs=int(a.size),
        )

    def to_dict(self) -> dict[str, float | int]:
        return {**asdict(self), "cv": self.cv}


def time_once_ms(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def time_interleaved(
    workloads: dict[str, Callable[[], object]], warmup: int = 5, repeats: int = 30
) -> dict[str, LatencyStats]:
    """Time several workloads round-robin, so drift and other tenants' load hit them alike."""
    for fn in workloads.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in workloads}
    for _ in range(repeats):
        for name, fn in workloads.items():
            samples[name].append(time_once_ms(fn))
    return {name: LatencyStats.from_samples(s) for name, s in samples.items()}


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
