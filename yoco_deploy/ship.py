"""Ship: from a chosen sub-BERT to a validated, re-timed ONNX bundle that meets its budget.

For each candidate in order: extract, export in the deploy format (validated against
PyTorch), time the file on this device, check every budget against what was *measured*
(latency) or *written* (size), evaluate the ONNX model with ONNX Runtime on the task's
dev set, pass the quality gate (clearly above the majority class: ``quality.py``), and
write the bundle. A candidate that breaks a budget or the gate is skipped for the next;
when none fits, the error names the smallest latency achieved or the best metric found.
Nothing that breaks its budget is written.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from yoco_deploy import runner
from yoco_deploy.arch import Arch
from yoco_deploy.atomic import staged_dir, write_text
from yoco_deploy.budgets import BudgetError, CostModel, Target
from yoco_deploy.costs import arch_costs

MANIFEST_SCHEMA = 1


@dataclass(frozen=True)
class ShipSettings:
    fmt: str = "int8"
    provider: str = "cpu"
    threads: int | None = 2
    seq_len: int = 128
    batch: int = 1
    max_candidates: int = 5
    protocol: runner.Protocol = field(default_factory=runner.Protocol)
    min_metric: float | None = None  # the quality floor; default: majority class + margin
    allow_weak: bool = False  # ship below the floor, with a warning in the manifest


@dataclass(frozen=True)
class Shipped:
    path: Path
    manifest: dict[str, Any]
    rejected: list[dict[str, Any]]


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def onnx_metric(
    path: Path, data, tokenizer, seq_len: int, threads: int | None, provider: str = "cpu"
) -> dict:
    """The task metric and loss of an ONNX file on the dev set, with ONNX Runtime on
    ``provider`` (the file's own kernels: for fp16 on a GPU, the GPU's)."""
    from yoco_deploy.data import encode
    from yoco_deploy.evaluation import evaluate, sorted_by_length

    session = runner.OrtBackend(provider, threads).load(path)
    enc = sorted_by_length(encode(tokenizer, data.dev, seq_len))
    result = evaluate(lambda feeds: session.run(None, feeds)[0], enc, data.task, 64)
    return {**result.to_dict(), "split": "dev"}


def quality_gate(data, settings: ShipSettings, metric_name: str):
    from yoco_deploy.quality import QualityGate

    labels = np.asarray(data.dev.labels)
    return QualityGate.for_split(
        data.task, labels, metric_name, settings.min_metric, settings.allow_weak
    )


def bundle_name(target: Target, measured_ms: float, metric: dict, arch: Arch) -> str:
    value = metric["value"]
    return f"{target.name}@{measured_ms:.1f}ms_{metric['name']}@{value:.3f}_{arch.arch_id}"


def library_versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import torch
    import transformers

    import yoco_deploy

    return {
        "yoco_deploy": yoco_deploy.__version__,
        "onnxruntime": onnxruntime.__version__,
        "onnx": onnx.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


def ship_target(
    super_bert,
    tokenizer,
    data,
    target: Target,
    cost_model: CostModel,
    candidates: list[Arch],
    out_dir: Path,
    settings: ShipSettings = ShipSettings(),
    say=print,
) -> Shipped:
    from yoco_deploy.export import ExportOptions, export_sub_bert, prepare_out_dir
    from yoco_deploy.extract import extract, save_extracted

    prepare_out_dir(Path(out_dir))  # an unwritable --bundles fails now, not after timing

    backend = runner.OrtBackend(settings.provider, settings.threads)
    feeds = runner.make_feeds(settings.batch, settings.seq_len, super_bert.dims.vocab_size)
    rejected: list[dict[str, Any]] = []
    options = ExportOptions.for_format(settings.fmt, save_model_dir=False)
    gate = None  # set by the first candidate that gets as far as its dev metric
    for arch in candidates[: settings.max_candidates]:
        if not cost_model.feasible(arch):
            rejected.append({"arch_id": arch.arch_id, "why": "predicted costs break a budget"})
            continue
        with tempfile.TemporaryDirectory(prefix="yoco-ship-") as tmp:
            report = export_sub_bert(
                super_bert, arch, Path(tmp), options, tokenizer, settings.seq_len, settings.batch
            )
            onnx_path = report.deploy_file
            stats = runner.measure(backend, backend.load(onnx_path), feeds, settings.protocol)
            size_mb = onnx_path.stat().st_size / 1e6
            broken = []
            if "latency" in target.budgets and stats["median_ms"] > target.budgets["latency"]:
                broken.append(
                    f"measured {stats['median_ms']:.2f} ms > {target.budgets['latency']:g} ms"
                )
            if "size" in target.budgets and size_mb > target.budgets["size"]:
                broken.append(f"file {size_mb:.1f} MB > {target.budgets['size']:g} MB")
            if broken:
                rejected.append(
                    {
                        "arch_id": arch.arch_id,
                        "why": "; ".join(broken),
                        "measured_ms": stats["median_ms"],
                    }
                )
                say(f"{target.name}: {arch.short()} rejected ({'; '.join(broken)}); next")
                continue
            metric = onnx_metric(
                onnx_path, data, tokenizer, settings.seq_len, settings.threads, settings.provider
            )
            gate = quality_gate(data, settings, metric["name"])
            if not gate.passes(metric["value"]):
                weak = f"{metric['name']} {metric['value']:.3f} below the floor {gate.floor:.3f}"
                if not gate.allow_weak:
                    rejected.append(
                        {"arch_id": arch.arch_id, "why": weak, "metric": metric["value"]}
                    )
                    say(f"{target.name}: {arch.short()} rejected ({weak}); next")
                    continue
                say(f"warning: {target.name}: {arch.short()} shipped with --allow-weak ({weak})")
            bundle = Path(out_dir) / bundle_name(target, stats["median_ms"], metric, arch)
            # staged beside its final place: a failure leaves the previous bundle intact
            with staged_dir(bundle) as stage:
                shutil.copyfile(onnx_path, stage / "model.onnx")
                save_extracted(extract(super_bert, arch), Path(tmp) / "hf", tokenizer)
                for f in (Path(tmp) / "hf").iterdir():
                    if f.name != "model.safetensors":  # the ONNX file carries the weights
                        shutil.copyfile(f, stage / f.name)
                manifest = make_manifest(
                    arch, target, cost_model, report, stats, metric, settings, stage / "model.onnx"
                )
                manifest["quality"] = gate.record(metric["value"])
                write_text(stage / "manifest.json", json.dumps(manifest, indent=2) + "\n")
            return Shipped(bundle, manifest, rejected)
    scores = [r["metric"] for r in rejected if "metric" in r]
    if gate is not None and scores:
        raise gate.refusal(max(scores), target.label())
    measured = [r["measured_ms"] for r in rejected if "measured_ms" in r]
    smallest = f"; the smallest measured latency was {min(measured):.2f} ms" if measured else ""
    raise BudgetError(
        f"target {target.label()}: none of the {len(candidates[: settings.max_candidates])} "
        f"candidates meets its budgets on this device{smallest}"
    )


def make_manifest(arch, target, cost_model, report, stats, metric, settings, onnx_path) -> dict:
    costs = arch_costs(arch, cost_model.space.dims, settings.seq_len, settings.batch)
    predicted = cost_model.costs(arch).get("latency")
    return {
        "schema": MANIFEST_SCHEMA,
        "target": target.label(),
        "arch": arch.to_dict(),
        "arch_id": arch.arch_id,
        "params": costs.params,
        "params_non_embedding": costs.params_non_embedding,
        "flops": costs.flops,
        "budgets": target.budgets,
        "budget_ms": target.budgets.get("latency"),
        "predicted_latency_ms": predicted,
        "measured_latency_ms": {
            "median": stats["median_ms"],
            "p90": stats["p90_ms"],
            "cv": stats["cv"],
            "runs": stats["runs"],
        },
        "device": target.name,
        "machine": runner.device_fingerprint(settings.provider, settings.threads),
        "provider": runner.PROVIDERS.get(settings.provider, settings.provider),
        "threads": settings.threads,
        "seq_len": settings.seq_len,
        "batch": settings.batch,
        "format": settings.fmt,
        "metric": metric,
        "validation": report.validation,
        "int8": report.int8,
        "onnx_sha256": sha256(onnx_path),
        "size_mb": onnx_path.stat().st_size / 1e6,
        "libraries": library_versions(),
        "created": time.time(),
    }
