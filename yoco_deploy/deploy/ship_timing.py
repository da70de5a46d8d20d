"""How ship states a candidate's latency: its rounds' ratio to the reference times the
reference's speed, and whether that settles its latency budget.

The speed is the device's as profiled (the reference's median over the whole profile,
which the predictor records) wherever the profile has the ship's shape: every bundle of
one device is then stated at one speed, so their manifests compare as the paired ratios
do, whatever the machine did between two targets' ships (on a shared 2-core machine the
reference swung by 20-27% between two targets a minute apart, and manifests stated at
each ship's own moment were 13-19% off each other). Today's reference speed is
recorded beside it. Without a profiled reference at that shape, the speed is the
reference's median over the whole ship."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np

from yoco_deploy import runtime
from yoco_deploy.arch import Arch
from yoco_deploy.deploy.budgets import CostModel


class ShipClock:
    """Every run of the reference in one target's ship: the paired runs beside the
    candidates, or the reference timed alone until there is one (today's speed, whose
    median states latencies when the profile has no reference at the ship's shape), and
    the profiled speed. A slow spell during one candidate's rounds moves neither that
    candidate's latency nor the others'. It also keeps the measured / calibrated-
    prediction ratio of every timed candidate, which corrects the cost model."""

    def __init__(self, base: CostModel):
        self.base = base
        self.paired: list[float] = []
        self.alone: list[float] = []
        self.ratios: list[float] = []
        predictor = base.predictor
        self.profiled = (
            predictor.profiled_reference_ms(base.batch, base.seq_len) if predictor else None
        )

    def calibrate(
        self, arch: Arch, stats: runtime.Latency, latency_ms: float
    ) -> tuple[dict[str, Any], CostModel | None]:
        """The prediction at the ship-wide reference speed (the manifest's ``timing``),
        and the cost model corrected by every measurement so far (None without a
        predictor or a reference)."""
        ref = self.reference_ms()
        if self.base.predictor is None or stats.ref_ms is None or ref is None:
            return {}, None
        now = self.base.recalibrated(ref)
        calibrated = now.costs(arch)["latency"]
        self.ratios.append(latency_ms / calibrated)
        correction = float(np.median(self.ratios))
        return {
            "reference_ms": ref,
            "calibrated_prediction_ms": calibrated,
            "prediction_error": calibrated / latency_ms - 1,
            "budget_ms": now.target.budgets.get("latency"),
            "correction": correction,
        }, self.base.recalibrated(ref, correction)

    def reference_ms(self, stats: runtime.Latency | None = None) -> float | None:
        """The reference speed latencies are stated at: the profiled one, else the
        ship's (``today_ms``)."""
        return self.profiled if self.profiled is not None else self.today_ms(stats)

    def today_ms(self, stats: runtime.Latency | None = None) -> float | None:
        """The reference's median in this ship so far (``stats``' own paired runs
        included)."""
        pool = self.paired + list(stats.ref_samples if stats else ())
        pool = pool or self.alone
        return float(np.median(pool)) if pool else None

    def reading(self, stats: runtime.Latency) -> tuple[float, float, float]:
        """The candidate's latency at the target's statistic and its 95% interval in ms:
        the ratio's median and interval, scaled by the reference speed, times (for a
        percentile) the candidate's own runs' percentile over their median; without a
        reference, its runs' median (or percentile)."""
        ref = self.reference_ms(stats)
        tail = tail_ratio(stats.samples, self.base.target.percentile)
        if stats.rel is None or ref is None:
            value = stats.median_ms * tail
            return value, value, value
        return stats.rel * ref * tail, stats.rel_lo * ref * tail, stats.rel_hi * ref * tail

    def budget_ms(self, stats: runtime.Latency, model: CostModel) -> float | None:
        """The latency budget in ms at the ship-wide reference speed (a share of the max
        sub-BERT's latency moves with it); ``model``: the cost model before any timing."""
        ref = self.reference_ms(stats)
        now = model if ref is None else self.base.recalibrated(ref)
        return now.target.budgets.get("latency")

    def settled(self, stats: runtime.Latency, model: CostModel) -> bool:
        """Whether the latency budget's verdict is the same across the whole interval."""
        budget = self.budget_ms(stats, model)
        if budget is None:
            return True
        _, lo, hi = self.reading(stats)
        return hi <= budget or lo > budget

    def record(self, stats: runtime.Latency, clear: bool) -> dict[str, Any]:
        """What the manifest's ``timing`` says about how the latency was taken."""
        _, lo, hi = self.reading(stats)
        out: dict[str, Any] = {
            "rounds": stats.rounds,
            "runs": stats.runs,
            "spread": stats.spread,
            "interval_ms": [lo, hi],
            "budget_clear": clear,
        }
        if stats.rel is not None:
            out |= {
                "ratio": stats.rel,
                "ratio_interval": [stats.rel_lo, stats.rel_hi],
                "reference_runs": len(self.paired) + len(stats.ref_samples),
                "stated_at": "profile" if self.profiled is not None else "ship",
                "reference_today_ms": self.today_ms(stats),
            }
        return out

    def keep(self, stats: runtime.Latency) -> None:
        """A candidate's paired reference runs join the ship-wide pool."""
        self.paired += stats.ref_samples


# ---- a percentile target -------------------------------------------------------------------


def runs_for(protocol: runtime.Protocol, percentile: float | None) -> runtime.Protocol:
    """Enough runs for the percentile to rest on at least two runs above it (200 for a
    p99, 40 for a p95); the median needs no more than the protocol's."""
    if percentile is None or percentile == 50:
        return protocol
    need = math.ceil(2 * 100 / (100 - percentile))
    return replace(
        protocol,
        min_runs=max(protocol.min_runs, need),
        max_runs=max(protocol.max_runs, need),
        decide_runs=max(protocol.decide_runs, need),
        max_seconds=max(protocol.max_seconds, 120.0),
    )


def tail_ratio(samples, percentile: float | None) -> float:
    """The percentile of single runs over their median (1 for the median)."""
    if percentile is None or percentile == 50 or len(samples) == 0:
        return 1.0
    runs = np.asarray(samples, dtype=float)
    return float(np.percentile(runs, percentile) / np.median(runs))
