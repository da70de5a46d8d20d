"""The pictures the pipeline leaves beside its results (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from yoco_deploy.manifest import BundleManifest


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_metric_vs_flops(rows: list[dict], path: Path, metric: str) -> Path:
    plt = _pyplot()
    key = metric if rows and metric in rows[0] else "accuracy"
    fig, ax = plt.subplots(figsize=(5.5, 4))
    xs = [r["flops"] / 1e9 for r in rows]
    ax.plot(xs, [r[key] for r in rows], "o")
    for r, x in zip(rows, xs, strict=True):
        ax.annotate(r["name"], (x, r[key]), textcoords="offset points", xytext=(4, 4))
    ax.set_xlabel("GFLOPs (batch 1)")
    ax.set_ylabel(f"dev {key}")
    ax.set_title("sub-BERTs of the trained super-BERT")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def pareto_plot(manifests: list[BundleManifest], path: Path) -> Path:
    """Metric against measured latency, one line per device: every bundle given (ship
    gives every bundle in its folder, not only the ones it just wrote)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.2))
    by_device: dict[str, list[tuple[float, float, str]]] = {}
    for m in manifests:
        point = (m.measured_latency_ms.median, m.metric["value"], m.target)
        by_device.setdefault(m.device, []).append(point)
    for device, points in by_device.items():
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], "o-", label=device)
        for x, y, label in points:
            ax.annotate(
                label.split(":", 1)[1],
                (x, y),
                textcoords="offset points",
                xytext=(4, -10),
                fontsize=7,
            )
    ax.set_xlabel("measured latency (ms, median)")
    ax.set_ylabel("dev metric (ONNX Runtime)")
    ax.set_title("shipped sub-BERTs per device")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
