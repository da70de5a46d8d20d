"""Deployment targets: a device and its budgets, and the costs they are checked against.

Syntax: ``NAME:latency=20ms,params=30M,flops=2G,size=60MB,params_non_embedding=10M``,
optionally followed by the shape and statistic the latency is meant at:
``server:latency=20ms@batch=16,seq=128,p=99`` (default: batch 1, the run's sequence
length, the median). Latency needs a predictor for NAME (``predictors/NAME.json``); the
other budgets are closed-form. ``latency=50%`` means half the predicted latency of the
largest sub-BERT on that device (budgets that travel between machines). A cost equal to
its budget is feasible (YOCO's code used ``<``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from yoco_deploy.arch import Arch
from yoco_deploy.costs import Costs, arch_costs, embedding_params
from yoco_deploy.errors import YocoError
from yoco_deploy.names import check_name, cut_slug, slug
from yoco_deploy.space import ModelDims, SearchSpace

_UNITS = {
    "latency": {"ms": 1.0, "s": 1e3, "": 1.0},
    "params": {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9},
    "params_non_embedding": {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9},
    "flops": {"": 1.0, "m": 1e6, "g": 1e9, "t": 1e12},
    "size": {"mb": 1.0, "gb": 1e3, "kb": 1e-3, "": 1.0},
}
UNIT_NAMES = {"latency": "ms", "params": "", "params_non_embedding": "", "flops": "", "size": "MB"}


class BudgetError(YocoError):
    """A target is malformed or cannot be met by any sub-BERT."""


@dataclass(frozen=True)
class Target:
    name: str
    budgets: dict[str, float] = field(default_factory=dict)
    # the shape latency is budgeted, searched, timed and stated at (None: the run's)
    batch: int | None = None
    seq_len: int | None = None
    # the latency statistic budgeted: a percentile of single runs (None: the median)
    percentile: float | None = None

    def __post_init__(self) -> None:
        check_name(self.name, "device name")  # it becomes predictors/NAME.json, bundles/...
        for what, value in (("batch", self.batch), ("seq", self.seq_len)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 1):  # fmt: skip
                raise BudgetError(f"target {self.name!r}: {what} must be a positive integer")
        if self.percentile is not None and not 50 <= self.percentile < 100:
            raise BudgetError(
                f"target {self.name!r}: p={self.percentile:g} is not a percentile a latency "
                "budget can hold: use 50 (the median) to 99.9"
            )

    def shape(self, batch: int, seq_len: int) -> tuple[int, int]:
        """(batch, seq_len) this target is measured at; the run's where it names none."""
        return self.batch or batch, self.seq_len or seq_len

    @property
    def tail(self) -> float | None:
        """The percentile a tail budget holds for (99 for ``p=99``); None for the median."""
        return None if self.percentile in (None, 50) else self.percentile

    @property
    def statistic(self) -> str:
        """``median`` or ``p99`` (a percentile of single runs)."""
        return "median" if self.tail is None else f"p{self.tail:g}"

    @property
    def needs_predictor(self) -> bool:
        """A latency budget (in ms or as a share) is predicted by the device's predictor;
        every other budget is closed-form."""
        return bool({"latency", "latency_share"} & set(self.budgets))

    def slug(self) -> str:
        """This target as one folder name (search logs and bundles alike)."""
        return slug(self.label())

    def cut_slug(self) -> str | None:
        """Its folder before long names ended with a hash (None when never cut)."""
        return cut_slug(self.label())

    def label(self) -> str:
        parts = [f"{k}={_fmt(k, v)}" for k, v in self.budgets.items()]
        given = (("batch", self.batch), ("seq", self.seq_len), ("p", self.percentile))
        shape = [f"{k}={v:g}" for k, v in given if v is not None]
        return f"{self.name}:" + ",".join(parts) + ("@" + ",".join(shape) if shape else "")

    def broken(self, costs: dict[str, float]) -> list[str]:
        """The budgets these costs break (predicted or measured alike), by name."""
        return sorted(k for k, budget in self.budgets.items() if costs[k] > budget)

    def broken_in_words(self, costs: dict[str, float], how: str = "measured") -> list[str]:
        """Each budget these costs break, as ``measured latency 2.01ms > 1.95ms``."""
        return [
            f"{how} {k} {_fmt(k, round(costs[k], _SHOWN.get(k, 6)))} > {_fmt(k, self.budgets[k])}"
            for k in self.broken(costs)
        ]

    def resolved(self, max_latency_ms: float | None) -> Target:
        """``latency=50%`` becomes milliseconds: a share of the largest sub-BERT's."""
        if "latency_share" not in self.budgets:
            return self
        budgets = {k: v for k, v in self.budgets.items() if k != "latency_share"}
        budgets["latency"] = round(self.budgets["latency_share"] * max_latency_ms, 2)
        return replace(self, budgets=budgets)


_SHOWN = {"latency": 2, "size": 1}  # decimals worth showing of a measured cost


def _fmt(kind: str, value: float) -> str:
    if kind == "latency_share":
        return f"{value:.0%}"
    if kind == "latency":
        return f"{value:g}ms"
    if kind == "size":
        return f"{value:g}MB"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:g}{unit}"
    return f"{value:g}"


def parse_target(text: str) -> Target:
    name, sep, rest = text.partition(":")
    rest, at, shape = rest.partition("@")
    if not sep or not name or not rest or (at and not shape):
        raise BudgetError(
            f"target {text!r}: write NAME:latency=20ms[,params=30M][,flops=2G][,size=60MB]"
            "[@batch=16,seq=128,p=99]"
        )
    check_name(name, f"target {text!r}: device name")
    return Target(name, _parse_budgets(text, rest), **_parse_shape(text, shape))


_SHAPE_KEYS = {"batch": "batch", "seq": "seq_len", "p": "percentile"}


def _parse_shape(text: str, shape: str) -> dict[str, float | int]:
    """``batch=16,seq=128,p=99`` (any of them) as Target's fields."""
    out: dict[str, float | int] = {}
    for item in shape.split(",") if shape else []:
        key, eq, value = item.strip().partition("=")
        key = key.strip().lower()
        if not eq or key not in _SHAPE_KEYS:
            raise BudgetError(
                f"target {text!r}: unknown shape setting {item!r}; after @ use batch=N, "
                "seq=N and p=PERCENTILE"
            )
        field_name = _SHAPE_KEYS[key]
        if field_name in out:
            raise BudgetError(f"target {text!r}: {key} is given twice; give it once")
        number = re.fullmatch(r"\s*[0-9]+\s*" if key != "p" else r"\s*[0-9]*\.?[0-9]+\s*", value)
        if not number or (key != "p" and int(value) < 1):
            kind = "a percentile such as 99" if key == "p" else "a positive whole number"
            raise BudgetError(f"target {text!r}: {key}={value.strip()!r} must be {kind}")
        out[field_name] = float(value) if key == "p" else int(value)
    return out


def _parse_budgets(text: str, rest: str) -> dict[str, float]:
    budgets: dict[str, float] = {}
    for item in rest.split(","):
        key, eq, value = item.strip().partition("=")
        key = key.strip().lower()
        if not eq or key not in _UNITS:
            raise BudgetError(f"target {text!r}: unknown budget {item!r}; use {', '.join(_UNITS)}")
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z%]*)\s*", value)
        if key in budgets or (key == "latency" and "latency_share" in budgets):
            raise BudgetError(f"target {text!r}: {key} is given twice; give each budget once")
        if key == "latency" and m and m.group(2) == "%":
            share = float(m.group(1)) / 100
            if not 0 < share <= 1:
                raise BudgetError(
                    f"target {text!r}: a relative latency budget is a share of the max "
                    "sub-BERT's latency, above 0% and at most 100%"
                )
            budgets["latency_share"] = share
            continue
        unit = m.group(2).lower() if m else None
        if not m or unit not in _UNITS[key]:
            raise BudgetError(
                f"target {text!r}: {key} value {value!r} needs a number with a "
                f"unit from {[u for u in _UNITS[key] if u]}"
            )
        budgets[key] = float(m.group(1)) * _UNITS[key][unit]
        if budgets[key] <= 0:
            raise BudgetError(f"target {text!r}: {key} budget must be positive")
    return budgets


def check_distinct(targets: list[tuple[str, Target]]) -> None:
    """Each target once, each in its own folder: ``(as written, parsed)`` pairs. The same
    target twice would search and ship twice into one folder; two targets whose names
    map to one folder would share a search log and a bundle folder."""
    seen: list[tuple[str, Target]] = []
    for text, target in targets:
        for first, other in seen:
            if other == target:  # budgets compared as values, in any order
                raise BudgetError(
                    f"target {text!r} is the same as {first!r}: give each target once"
                )
            if other.slug() == target.slug():
                raise BudgetError(
                    f"targets {first!r} and {text!r} would share the folder {target.slug()}: "
                    "rename one device"
                )
        seen.append((text, target))


def size_mb(costs: Costs, dims: ModelDims, fmt: str = "int8") -> float:
    """ONNX file size estimate: fp16 stores everything in 2 bytes; int8 stores matmul
    weights in 1 byte (embeddings, LayerNorms and biases stay fp32)."""
    if fmt == "fp16":
        return costs.params * 2 / 1e6
    if fmt != "int8":
        return costs.params * 4 / 1e6
    body = costs.params_non_embedding
    return (embedding_params(dims) * 4 + body * 1.05) / 1e6


class CostModel:
    """All costs of a sub-BERT for one target; latency from the device's predictor."""

    def __init__(
        self,
        target: Target,
        space: SearchSpace,
        predictor=None,
        seq_len: int = 128,
        batch: int = 1,
        reference_ms: float | None = None,
        fmt: str | None = None,
        correction: float = 1.0,
        static: dict[str, Costs] | None = None,
        tail: float = 1.0,
    ):
        wants_latency = target.needs_predictor
        if wants_latency and predictor is None:
            raise BudgetError(f"target {target.name!r} has a latency budget but no predictor")
        if predictor is not None and not space.same_shapes(predictor.space):
            raise BudgetError(f"predictor for {target.name!r} was fitted for another space")
        self.space, self.predictor = space, predictor
        self.seq_len, self.batch, self.reference_ms = seq_len, batch, reference_ms
        # measured / predicted latency near the candidates (ship's measurements); the
        # relative budget stays a share of the max sub-BERT's uncorrected prediction
        self.correction = correction
        # a percentile target: that percentile of single runs over their median (the
        # reference's, timed on this machine); the predictor predicts medians
        self.tail = tail
        timed = predictor.reference.get("format", "int8") if predictor else None
        if wants_latency and fmt is not None and timed != fmt:
            raise BudgetError(
                f"predictor for {target.name!r} was profiled with {timed} files, but the "
                f"target ships {fmt}: profile the device with --format {fmt}, or ship {timed}"
            )
        self.fmt = fmt or timed or "int8"  # what the size budget is estimated for
        self._cache: dict[str, dict[str, float]] = {}
        # params and FLOPs do not move with the machine's speed: one computation per arch,
        # shared by every recalibrated copy (and carried into the export and the manifest)
        self._static: dict[str, Costs] = {} if static is None else static
        self.requested = target  # as the user wrote it: a share stays a share
        self.target = target
        if "latency_share" in target.budgets:
            top = self.costs(space.max_arch())["latency"] / correction
            self.target = target.resolved(top)

    def recalibrated(
        self, reference_ms: float | None, correction: float = 1.0, tail: float | None = None
    ) -> CostModel:
        """The same target and predictor at another machine speed (the reference model
        timed at ``reference_ms``): predictions move, and a relative budget is resolved
        again against the same calibrated speed, so it moves with them. ``correction``
        scales the predictions only (what measurements near the budget said); ``tail``
        replaces the percentile's ratio to the median."""
        return CostModel(
            self.requested, self.space, self.predictor, self.seq_len, self.batch,
            reference_ms, fmt=self.fmt, correction=correction, static=self._static,
            tail=self.tail if tail is None else tail,
        )  # fmt: skip

    def arch_costs(self, arch: Arch) -> Costs:
        """Params and FLOPs at this target's shapes, computed once per arch."""
        if arch.arch_id not in self._static:
            self._static[arch.arch_id] = arch_costs(arch, self.space.dims, self.seq_len, self.batch)
        return self._static[arch.arch_id]

    def costs(self, arch: Arch) -> dict[str, float]:
        """Every budgeted cost by name: params, FLOPs, estimated size, predicted latency."""
        if arch.arch_id not in self._cache:
            c = self.arch_costs(arch)
            out = {
                "params": c.params,
                "params_non_embedding": c.params_non_embedding,
                "flops": c.flops,
                "size": size_mb(c, self.space.dims, self.fmt),
            }
            if self.predictor is not None:
                out["latency"] = (
                    self.correction
                    * self.tail
                    * self.predictor.predict(
                        arch, self.batch, self.seq_len, self.reference_ms
                    ).latency_ms
                )
            self._cache[arch.arch_id] = out
        return self._cache[arch.arch_id]

    def violation(self, arch: Arch) -> float:
        """0 when every budget holds; else the summed relative excess."""
        costs = self.costs(arch)
        return sum(max(0.0, costs[k] / b - 1) for k, b in self.target.budgets.items())

    def penalty(self, arch: Arch) -> float:
        """YOCO-BERT's reward factor (METHOD.md): the product over broken budgets of
        (1 - (cost - C) / (cost_max - C))^2, clipped at 0; 1 when every budget holds."""
        costs, top = self.costs(arch), self.costs(self.space.max_arch())
        factor = 1.0
        for k, budget in self.target.budgets.items():
            if costs[k] > budget:
                room = top[k] - budget
                factor *= max(0.0, 1 - (costs[k] - budget) / room) ** 2 if room > 0 else 0.0
        return factor

    def feasible(self, arch: Arch) -> bool:
        return not self.target.broken(self.costs(arch))

    def check_achievable(self) -> None:
        """Costs grow with every dimension, so the min sub-BERT is the cheapest in each."""
        smallest = self.space.min_arch()
        costs = self.costs(smallest)
        broken = self.target.broken(costs)
        if broken:
            budgets = self.target.budgets
            parts = [
                f"{k} budget {_fmt(k, budgets[k])} is below the smallest achievable "
                f"{_fmt(k, costs[k])}"
                for k in broken
            ]
            raise BudgetError(
                f"target {self.target.label()}: no sub-BERT fits: "
                + "; ".join(parts)
                + f" (the min sub-BERT {smallest.short()})"
            )


def load_predictor(name: str, path: Path, space: SearchSpace):
    """Device ``name``'s latency predictor from ``path``, or one error saying how to make it."""
    from yoco_deploy.device.predictor import LatencyPredictor

    path = Path(path)
    if not path.is_file():
        raise BudgetError(
            f"no latency predictor for device {name!r} ({path}); profile and fit "
            "it first: yoco-deploy profile ... && yoco-deploy fit ..."
        )
    return LatencyPredictor.load(path, space)
