"""Shipped bundles as the CLI shows them: a table, or rows for ``--json`` and summary.json."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from yoco_deploy.cli.common import print_json, table_console
from yoco_deploy.manifest import BundleManifest

COLUMNS = (
    "target",
    "budget ms",
    "arch",
    "params",
    "GFLOPs",
    "predicted ms",
    "measured ms (p90, or the budgeted percentile)",
    "metric",
    "majority class",
    "bundle",
)


def bundle_summary(bundle: Path, manifest: BundleManifest | None = None) -> dict:
    """One shipped bundle's row (its manifest read when not given)."""
    m = manifest or BundleManifest.read(bundle)
    return {
        "bundle": str(bundle),
        "target": m.target,
        "budget_ms": m.budget_ms,
        "arch_id": m.arch_id,
        "arch": m.arch,
        "params": m.params,
        "flops": m.flops,
        "predicted_ms": m.predicted_ms,  # at the speed the bundle was timed at
        "measured_latency_ms": asdict(m.measured_latency_ms),
        "statistic": m.statistic or "median",
        "shape": [m.batch, m.seq_len],
        "throughput": m.throughput,
        "metric": m.metric,
        "quality": m.quality or None,
        "labels": m.labels,
    }


def folder_bundles(bundles: Path, say=None) -> list[tuple[Path, BundleManifest]]:
    """Every bundle in a bundles folder, by name: its folders holding a manifest.json,
    not its hidden ones (``.polish`` holds polish runs, ``.NAME.staging-PID`` a bundle
    being written); a manifest that cannot be read is said and left out."""
    from yoco_deploy.errors import YocoError
    from yoco_deploy.manifest import FILE

    found = []
    folders = sorted(Path(bundles).iterdir()) if Path(bundles).is_dir() else []
    for folder in folders:
        if folder.name.startswith(".") or not (folder / FILE).is_file():
            continue
        try:
            found.append((folder, BundleManifest.read(folder)))
        except YocoError as err:
            if say is not None:
                say(f"summary: {folder} left out ({err})")
    return found


def print_summary(rows: list[dict], as_json: bool = False) -> None:
    from rich.table import Table

    from yoco_deploy.arch import Arch

    if as_json:
        print_json(rows)
        return
    table = Table(title="shipped bundles")
    for col in COLUMNS:
        table.add_column(col)
    for m in rows:
        lat, pred, budget = m["measured_latency_ms"], m["predicted_ms"], m["budget_ms"]
        table.add_row(
            m["target"],
            f"{budget:.2f}" if budget else "-",
            Arch.from_dict(m["arch"]).short(),
            f"{m['params'] / 1e6:.1f}M",
            f"{m['flops'] / 1e9:.2f}",
            f"{pred:.2f}" if pred else "-",
            _measured_cell(lat, m.get("statistic")),
            f"{m['metric']['name']} {m['metric']['value']:.3f}",
            _baseline_cell(m["quality"]),
            m["bundle"],
        )
    table_console().print(table)


def _measured_cell(lat: dict, statistic: str | None) -> str:
    """The median (p90), or for a percentile target that percentile, which its budget
    holds (median beside it)."""
    if lat.get("percentile") is not None:
        return f"{statistic} {lat['percentile']:.2f} (median {lat['median']:.2f})"
    return f"{lat['median']:.2f} ({lat['p90']:.2f})"


def _baseline_cell(quality: dict | None) -> str:
    if not quality:
        return "-"
    flag = "" if quality["passed"] else " WEAK"
    return f"{quality['majority_baseline']:.3f}{flag}"
