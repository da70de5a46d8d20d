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
from typing import Any, NamedTuple

import numpy as np

from yoco_deploy import runtime
from yoco_deploy.arch import Arch
from yoco_deploy.deploy.budgets import CostModel


class Reading(NamedTuple):
    """A candidate's latency in ms at the target's statistic, its 95% interval, and the
    same latency at the median (what the manifest's throughput rests on)."""

    ms: float
    lo_ms: float
    hi_ms: float
    median_ms: float


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
        self, arch: Arch, stats: runtime.Latency, latency_ms: float, checked_ms: float
    ) -> tuple[dict[str, Any], CostModel | None]:
        """The prediction at the ship-wide reference speed (the manifest's ``timing``),
        and the cost model corrected by every measurement so far (None without a
        predictor or a reference). The correction is by ``checked_ms``, what the budget
        is held against (a tail target's upper end), so that the candidates it steers to
        next are ones that can pass."""
        ref = self.reference_ms()
        if self.base.predictor is None or stats.ref_ms is None or ref is None:
            return {}, None
        now = self.base.recalibrated(ref)
        calibrated = now.costs(arch)["latency"]
        self.ratios.append(checked_ms / calibrated)
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

    def reading(self, stats: runtime.Latency) -> Reading:
        """The candidate's latency at the target's statistic and its 95% interval in ms:
        the ratio's median and interval, scaled by the reference speed, times (for a
        percentile) the candidate's own runs' percentile over their median, its interval
        widened by that percentile's own (``tail_interval``); without a reference, its
        runs' median (or percentile)."""
        ref = self.reference_ms(stats)
        tail, tail_lo, tail_hi = tail_interval(stats.samples, self.base.target.percentile)
        if stats.rel is None or ref is None:
            mid = lo = hi = stats.median_ms
        else:
            mid, lo, hi = stats.rel * ref, stats.rel_lo * ref, stats.rel_hi * ref
        return Reading(mid * tail, lo * tail_lo, hi * tail_hi, mid)

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
        _, lo, hi, _ = self.reading(stats)
        return hi <= budget or lo > budget

    def record(self, stats: runtime.Latency, clear: bool) -> dict[str, Any]:
        """What the manifest's ``timing`` says about how the latency was taken."""
        _, lo, hi, _ = self.reading(stats)
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


CONFIDENCE = 0.95  # of a percentile's interval from order statistics


def runs_for(
    protocol: runtime.Protocol, percentile: float | None, interval: bool = True
) -> runtime.Protocol:
    """Enough runs for a percentile's 95% interval to have an upper end (368 for a p99,
    72 for a p95: the fewest whose largest run lies above the p99 with 97.5% chance), and
    twice that while the budget's verdict is unsettled (the upper end then rests on the
    third-slowest run, not the slowest one a noisy spell sets); or without ``interval``
    for a point estimate resting on two runs above it (200 for a p99); the median needs
    no more than the protocol's."""
    if percentile is None or percentile == 50:
        return protocol
    if interval:
        need = math.ceil(math.log((1 - CONFIDENCE) / 2) / math.log(percentile / 100))
        decide = 2 * need
    else:
        need = decide = math.ceil(2 * 100 / (100 - percentile))
    return replace(
        protocol,
        min_runs=max(protocol.min_runs, need),
        max_runs=max(protocol.max_runs, need),
        decide_runs=max(protocol.decide_runs, decide),
        max_seconds=max(protocol.max_seconds, 240.0),  # room for the unsettled runs
    )


def tail_ratio(samples, percentile: float | None) -> float:
    """The percentile of single runs over their median (1 for the median)."""
    return tail_interval(samples, percentile)[0]


def tail_interval(samples, percentile: float | None) -> tuple[float, float, float]:
    """The percentile of single runs over their median, and its 95% interval: order
    statistics chosen by the binomial law, which holds whatever the runs' distribution
    (a p99 from 200 runs rests on its two slowest, which one noisy spell moves by 10%).
    Too few runs for an upper end: infinity. (1, 1, 1) for the median."""
    if percentile is None or percentile == 50 or len(samples) == 0:
        return 1.0, 1.0, 1.0
    runs = np.sort(np.asarray(samples, dtype=float))
    median = float(np.median(runs))
    n, p = len(runs), percentile / 100
    from scipy.stats import binom

    below = binom.cdf(np.arange(n + 1), n, p)  # below[k]: chance at most k runs fall under it
    tail = (1 - CONFIDENCE) / 2
    # [X_(l), X_(u)] (1-based) holds the percentile when between l and u-1 runs are below
    upper = next((k for k in range(1, n + 1) if below[k - 1] >= 1 - tail), None)
    lower = max((k for k in range(1, n + 1) if below[k - 1] <= tail), default=None)
    lo = runs[lower - 1] / median if lower else 0.0
    hi = runs[upper - 1] / median if upper else math.inf
    return float(np.percentile(runs, percentile) / median), float(lo), float(hi)
