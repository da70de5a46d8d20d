"""What a shipped bundle says about itself: the manifest built from one candidate's
export, timing, metric and the run's settings (the file's digests are set at write)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from yoco_deploy import runtime
from yoco_deploy.arch import Arch
from yoco_deploy.manifest import BundleManifest, MeasuredLatency
from yoco_deploy.model.loading import BASE_MODEL_KEY
from yoco_deploy.train.data import GLUE_HUB
from yoco_deploy.util.versions import library_versions


def bundle_manifest(run, name: str, arch: Arch, report, timed, metric: dict[str, Any]):
    """``run``: the target's ship run (its cost model as asked, settings, session, data,
    labels, super-BERT and quality gate); ``timed``: the candidate's timing."""
    settings, session, base = run.settings, run.session, run.base
    costs = run.static_costs(arch)
    budgets = dict(base.target.budgets)
    budget_ms = budgets.get("latency")
    if timed.record.get("budget_ms") is not None:  # a share, at the speed it was timed at
        budget_ms = budgets["latency"] = timed.record["budget_ms"]
    stats, data = timed.stats, run.data
    median = timed.median_ms
    hub = data.source == GLUE_HUB  # a local folder is named, its path kept private
    return BundleManifest(
        target=base.requested.label(),  # as asked: a share stays one
        arch=arch.to_dict(),
        arch_id=arch.arch_id,
        params=costs.params,
        params_non_embedding=costs.params_non_embedding,
        flops=costs.flops,
        budgets=budgets,
        budget_ms=budget_ms,
        predicted_latency_ms=base.costs(arch).get("latency"),
        # the ship-wide latency; p90 and cv are the candidate's own runs' spread
        measured_latency_ms=MeasuredLatency(
            median,
            stats.p90_ms,
            stats.cv,
            stats.runs,
            None if base.target.tail is None else timed.latency_ms,
        ),
        device=base.target.name,
        machine=runtime.host_fingerprint(),
        session=session.to_dict(),  # the one record of how it was run and timed
        seq_len=settings.seq_len,
        batch=settings.batch,
        statistic=base.target.statistic,
        throughput=settings.batch * 1000 / median,
        format=settings.fmt,
        metric=metric,
        validation=report.validation,
        int8=report.int8,
        onnx_sha256="",
        size_mb=Path(report.deploy_file).stat().st_size / 1e6,
        libraries=library_versions("onnxruntime", "onnx", "torch", "transformers"),
        created=time.time(),
        name=name,
        labels=run.labels,
        base_model=getattr(run.sb.config, BASE_MODEL_KEY, None),
        source_layers=list(run.sb.space.kept_layers(arch.depth)),
        data={
            "task": data.task.name,
            "source": GLUE_HUB if hub else "local",
            "name": f"GLUE {data.task.name}" if hub else Path(data.source).name,
        },
        timing=timed.record,
        quality=run.gate.record(metric["value"]),
    )
