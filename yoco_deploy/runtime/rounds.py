"""Timing in interleaved rounds beside a reference: the protocol, the feeds, the
distribution-free interval of a median, and the one latency type every timing returns."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

REFERENCE_ID = "reference"


@dataclass(frozen=True)
class Protocol:
    warmup: int = 5
    min_runs: int = 25  # five rounds: the fewest whose interval means something
    max_runs: int = 100
    chunk: int = 5  # paired runs per round
    max_spread: float = 0.04  # the interval's width over the median ratio (about +-2%)
    max_seconds: float = 30.0
    ref_every: int = 8
    drift_tol: float = 0.15
    decide_runs: int = 200  # how far a measurement goes on for a decision it cannot settle

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Protocol:
        """A plan's protocol; keys of another version's protocol are left to the defaults."""
        names = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in (data or {}).items() if k in names})


def job_key(arch_id: str, batch: int, seq_len: int) -> str:
    return f"{arch_id}@{batch}x{seq_len}"


def make_feeds(batch: int, seq_len: int, vocab_size: int = 30522, seed: int = 0) -> dict:
    """Full-length sequences (latency depends on shapes, not on token values)."""
    rng = np.random.default_rng(seed)
    return {
        "input_ids": rng.integers(1, vocab_size, size=(batch, seq_len), dtype=np.int64),
        "attention_mask": np.ones((batch, seq_len), dtype=np.int64),
        "token_type_ids": np.zeros((batch, seq_len), dtype=np.int64),
    }


def median_interval(values, level: float = 0.95) -> tuple[float, float]:
    """A distribution-free interval for the median of ``values`` (order statistics:
    the k-th smallest and largest, k the largest rank the binomial tail allows at
    ``level``; below 6 values it is the range). A round slowed by another tenant moves
    it by one rank, not by its size."""
    v = np.sort(np.asarray(values, dtype=float))
    n = v.size
    tail, k, cdf, term = (1 - level) / 2, 0, 0.0, 0.5**n
    for i in range(n):  # cdf = P(Binomial(n, 1/2) <= i)
        cdf += term
        if cdf > tail:
            break
        k = i + 1
        term *= (n - i) / (i + 1)
    k = max(k, 1)
    return float(v[k - 1]), float(v[n - k])


@dataclass(frozen=True)
class Latency:
    """One measured latency in milliseconds (nn-Meter's ``Latency``): the median and its
    spread over ``runs`` timed runs in ``rounds`` rounds; timed beside a reference, also
    the reference's median, the ratio (the median of the rounds' ratios) and its 95%
    interval. ``spread`` is the interval's width over its median (the ratio's, or the
    latency's without a reference). ``to_dict`` is the measurements-file row; the raw
    samples ride along for callers that pool them (ship's ship-wide reference)."""

    median_ms: float
    p90_ms: float
    cv: float
    runs: int
    ref_ms: float | None = None
    rel: float | None = None
    rel_lo: float | None = None
    rel_hi: float | None = None
    rounds: int | None = None
    spread: float | None = None
    samples: tuple[float, ...] = field(default=(), repr=False, compare=False)
    ref_samples: tuple[float, ...] = field(default=(), repr=False, compare=False)

    @classmethod
    def from_samples(cls, samples, refs=None, chunk: int | None = None) -> Latency:
        """``chunk``: runs per round (None: one round of everything)."""
        a = np.asarray(samples, dtype=float)
        if a.size == 0:
            raise ValueError("no timing samples")
        r = np.asarray(refs if refs is not None else [], dtype=float)
        paired = r.size == a.size
        step = chunk or a.size
        per_round = [
            float(np.median(a[i : i + step] / r[i : i + step]))
            if paired
            else float(np.median(a[i : i + step]))
            for i in range(0, a.size, step)
        ]
        centre = float(np.median(per_round))
        lo, hi = median_interval(per_round)
        extra = {}
        if paired:
            extra = {"ref_ms": float(np.median(r)), "rel": centre, "rel_lo": lo, "rel_hi": hi}
        return cls(
            median_ms=float(np.median(a)),
            p90_ms=float(np.percentile(a, 90)),
            cv=float(a.std(ddof=1) / a.mean()) if a.size > 1 and a.mean() > 0 else 0.0,
            runs=int(a.size),
            rounds=len(per_round),
            spread=(hi - lo) / centre if centre > 0 else 0.0,
            samples=tuple(a.tolist()),
            ref_samples=tuple(r.tolist()) if paired else (),
            **extra,
        )

    def to_dict(self) -> dict[str, float | int]:
        skip = ("samples", "ref_samples")
        return {k: v for k, v in asdict(self).items() if v is not None and k not in skip}


def measure(
    backend,
    handle,
    feeds: dict,
    protocol: Protocol,
    reference=None,
    settled: Callable[[Latency], bool] | None = None,
) -> Latency:
    """Warm up, then time in interleaved rounds until the median is known to within
    ``protocol.max_spread`` (or a cap is hit).

    With ``reference``, each timed run of the model is followed by one of the reference,
    and each round's ratio is the median of its paired ratios: a shared machine changes
    speed within seconds (medians of one model moved 4.1 to 7.1 ms here), and pairing
    cancels that; the rounds' spread shows what pairing did not cancel. ``settled``: a
    decision resting on the measurement (a budget); while it says no, rounds go on, up
    to ``protocol.decide_runs``. Garbage is collected before and the collector paused
    during timing (as timeit does): a collection of the exporter's garbage inside a
    timed run adds milliseconds."""
    gc.collect()
    gc.disable()
    try:
        for _ in range(protocol.warmup):
            backend.time_one(handle, feeds)
            if reference is not None:
                backend.time_one(reference, feeds)
        samples: list[float] = []
        refs: list[float] = []
        started = time.monotonic()
        while True:
            for _ in range(protocol.chunk):
                samples.append(backend.time_one(handle, feeds))
                if reference is not None:
                    refs.append(backend.time_one(reference, feeds))
            if len(samples) < protocol.min_runs:
                continue
            stats = Latency.from_samples(samples, refs or None, protocol.chunk)
            narrow = stats.spread <= protocol.max_spread
            decided = settled is None or settled(stats)
            if narrow and decided:
                break
            timed_out = time.monotonic() - started > protocol.max_seconds
            cap = protocol.max_runs if decided else max(protocol.decide_runs, protocol.max_runs)
            if len(samples) >= cap or (timed_out and decided):
                break
            if timed_out and len(samples) >= protocol.max_runs:
                break  # undecided, but out of time: the caller records it as unclear
    finally:
        gc.enable()
    return Latency.from_samples(samples, refs or None, protocol.chunk)
