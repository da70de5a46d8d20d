"""What the benchmarks share: the machine a result ran on, workloads timed round-robin,
the ``yoco-deploy`` command run as a user runs it, and a result written as JSON with its
table. A bench script runs as ``python bench/NAME.py``, so this folder is on its path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from yoco_deploy.runtime import Latency

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def machine_info() -> dict[str, object]:
    """What a timing depends on: the host, torch, and the load while it ran."""
    import torch

    from yoco_deploy.runtime import host_fingerprint

    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {
        **host_fingerprint(),
        "torch": torch.__version__,
        "loadavg_1_5_15": [round(x, 2) for x in load],
    }


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


def yoco(*args: object) -> float:
    """Run ``yoco-deploy ARGS`` offline from the repository root, as a user would, its
    output on the terminal; its wall seconds. A failure ends the benchmark."""
    return _yoco(args, capture=False)[1]


def yoco_output(*args: object) -> tuple[str, float]:
    """``yoco`` with its stdout captured (a ``--json`` answer): (stdout, wall seconds)."""
    out, seconds = _yoco(args, capture=True)
    return out or "", seconds


def _yoco(args: tuple, capture: bool) -> tuple[str | None, float]:
    started = time.time()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    argv = [str(Path(sys.executable).with_name("yoco-deploy")), *map(str, args)]
    done = subprocess.run(
        argv, cwd=ROOT, env=env, stdout=subprocess.PIPE if capture else None, text=True
    )
    if done.returncode:
        raise SystemExit(f"yoco-deploy {' '.join(argv[1:])} failed ({done.returncode})")
    return done.stdout, time.time() - started


def to_json(result) -> str:
    """Indented JSON whose lists of numbers or strings stay on one line: a result with
    anytime curves reads (and diffs) as rows, not as one number per line."""
    if isinstance(result, dict):
        if not result:
            return "{}"
        body = ",\n".join(f"{json.dumps(str(k))}: {to_json(v)}" for k, v in result.items())
        return "{\n" + _indent(body) + "\n}"
    if isinstance(result, list) and any(isinstance(v, dict | list) for v in result):
        return "[\n" + _indent(",\n".join(to_json(v) for v in result)) + "\n]"
    return json.dumps(result)


def _indent(text: str) -> str:
    return "\n".join(" " + line for line in text.splitlines())


def write_result(path: Path, result: dict, table: str) -> None:
    """``path`` (JSON) and its table beside it (``.md``), and the table on stdout."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_json(result) + "\n")
    path.with_suffix(".md").write_text(table)
    print(table)


def label_axes(ax, xlabel: str, ylabel: str, title: str, legend_size: int = 8) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=legend_size)


def save_figure(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
