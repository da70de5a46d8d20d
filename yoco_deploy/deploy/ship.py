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

import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from yoco_deploy import runtime
from yoco_deploy.arch import Arch
from yoco_deploy.costs import arch_costs
from yoco_deploy.deploy.budgets import BudgetError, CostModel
from yoco_deploy.deploy.bundle_files import bundle_name, class_names, write_bundle
from yoco_deploy.deploy.polish import Polished, PolishSpec
from yoco_deploy.deploy.quality import onnx_metric, quality_gate
from yoco_deploy.deploy.search_log import provenance
from yoco_deploy.deploy.ship_manifest import bundle_manifest
from yoco_deploy.deploy.ship_timing import ShipClock, runs_for, tail_ratio
from yoco_deploy.export import metadata as onnx_metadata
from yoco_deploy.manifest import BundleManifest


@dataclass(frozen=True)
class ShipSettings:
    fmt: str = "int8"
    # settings to change from how the device's predictor was profiled (provider, threads,
    # spinning); empty: exactly as profiled, which is the only way predictions hold
    session: dict[str, Any] = field(default_factory=dict)
    seq_len: int = 128
    batch: int = 1
    max_candidates: int = 5
    protocol: runtime.Protocol = field(default_factory=runtime.Protocol)
    min_metric: float | None = None  # the quality floor; default: majority class + margin
    allow_weak: bool = False  # ship below the floor, with a warning in the manifest
    # distil the chosen sub-BERT alone before it ships (auto: where it was trained here)
    polish: PolishSpec | None = field(default_factory=PolishSpec.auto)

    @classmethod
    def from_options(
        cls,
        fmt: str = "int8",
        seq_len: int = 128,
        batch: int = 1,
        provider: str | None = None,
        threads: int | None = None,
        spinning: str | None = None,
        polish: str | int | None = "auto",
        **rest: Any,
    ) -> ShipSettings:
        """Settings from the CLI's options or the pipeline's YAML, checked now: the format,
        the session values and that the provider is installed (unset ones: as profiled)."""
        from yoco_deploy.export.sub_bert import ExportOptions

        ExportOptions.for_format(fmt)  # validates the name
        given = {"provider": provider, "threads": threads, "spinning": spinning}
        session = {k: v for k, v in given.items() if v is not None}
        spec = DEFAULT_SESSION.with_options(**session)  # checks the values
        runtime.resolve_provider(spec.provider)  # an unavailable provider fails now
        spec = PolishSpec.parse(polish) if polish is not None else None
        return cls(fmt=fmt, session=session, seq_len=seq_len, batch=batch, polish=spec, **rest)

    def __post_init__(self) -> None:
        if self.min_metric is not None and not -1 <= self.min_metric <= 1:
            raise BudgetError(
                f"--min-metric {self.min_metric:g} can never be met or is meaningless: every "
                "task metric (accuracy, F1, Matthews, Pearson) lies in [-1, 1]"
            )

    def session_for(self, cost_model: CostModel) -> runtime.SessionSpec:
        """The session a target's bundle is timed and run with: the one its latency
        predictor was profiled with (predictions only hold for it), with the settings
        asked for, which must then agree with it."""
        predictor = cost_model.predictor
        if predictor is None:
            return DEFAULT_SESSION.with_options(**self.session)
        profiled = runtime.recorded_session(predictor.device)
        asked = profiled.with_options(**self.session)
        if asked != profiled:
            raise BudgetError(
                f"target {cost_model.target.label()}: its predictor was profiled with "
                f"{profiled.describe()}, but ship was asked for {asked.describe()}; "
                "predictions only hold for the profiled settings: drop the session options, "
                "or profile the device again with them"
            )
        return profiled


# what a bundle runs with when no predictor says otherwise (ship without a latency budget)
DEFAULT_SESSION = runtime.SessionSpec(threads=2)


@dataclass(frozen=True)
class Shipped:
    path: Path
    manifest: BundleManifest
    rejected: list[dict[str, Any]]


@dataclass(frozen=True)
class _Built:
    """A candidate exported in the deploy format, with the metadata it ships with."""

    report: Any  # ExportReport

    @property
    def path(self) -> Path:
        return self.report.deploy_file

    @property
    def size_mb(self) -> float:
        return self.path.stat().st_size / 1e6


@dataclass(frozen=True)
class _Timed:
    """A candidate's timing: the runs, the ship-wide latency and the manifest's record."""

    stats: runtime.Latency
    latency_ms: float
    record: dict[str, Any]
    # what the latency budget is checked against: the latency, or for a percentile target
    checked_ms: float  # the upper end of its 95% interval (a promise about the tail)
    median_ms: float  # the latency at the median (what the throughput rests on)


def ship_target(
    super_bert,
    tokenizer,
    data,
    cost_model: CostModel,
    candidates: list[Arch],
    out_dir: Path,
    settings: ShipSettings = ShipSettings(),
    say=print,
    polisher: Callable[[Arch], Polished] | None = None,
    inputs: Mapping[str, str] | None = None,
) -> Shipped:
    """``polisher``: how ``settings.polish`` is done (``DeployJob`` makes it from the
    super-BERT's training record); ``inputs``: what the candidates' scores came from (the
    super-BERT's weights and the search data, ``Supernet.score_inputs``), which the
    manifest records with the space and the predictor."""
    from yoco_deploy.util.atomic import check_writable

    check_writable(Path(out_dir), BudgetError)  # an unwritable --bundles fails now
    # exported, timed, scored and stated at the target's own shape, where it names one
    target = cost_model.target
    settings = replace(settings, seq_len=target.seq_len or settings.seq_len,
                       batch=target.batch or settings.batch)  # fmt: skip
    session = settings.session_for(cost_model)
    with tempfile.TemporaryDirectory(prefix="yoco-ship-reference-") as tmp:
        run = _ShipRun(super_bert, tokenizer, data, cost_model, settings, session, say)
        run.provenance = provenance(super_bert.space, cost_model.predictor, inputs)
        if polisher is not None:
            run.polisher = polisher
        elif settings.polish is not None and not settings.polish.is_auto:
            raise BudgetError("ship was asked to polish but given no way to (a polisher)")
        run.reference = _reference_session(cost_model, run.backend, Path(tmp))
        run.calibrate_now()
        return run.ship(candidates, Path(out_dir))


def _reference_session(cost_model: CostModel, backend, folder: Path):
    """The predictor's reference model, timed beside every candidate so that its
    prediction is calibrated to this machine's speed at that moment."""
    if cost_model.predictor is None:
        return None
    from yoco_deploy.device.calibrate import build_reference

    return backend.load(build_reference(cost_model.predictor, folder))


class _ShipRun:
    """One target's way down its candidates. The reference is timed first, so predictions
    start at today's speed; each candidate is exported, timed beside the reference and
    checked; a latency rejection corrects the cost model with what was just measured (the
    measured/predicted ratio) and repairs the remaining candidates to the corrected
    budget boundary. It gives up when the corrected cost model rules out everything below
    the last rejection, or after 2 x max_candidates exports."""

    def __init__(self, super_bert, tokenizer, data, cost_model, settings, session, say):
        self.sb, self.tokenizer, self.data = super_bert, tokenizer, data
        self.target = cost_model.target
        self.base = self.model = cost_model  # the model is corrected as measurements come
        self.settings, self.session, self.say = settings, session, say
        self.backend = runtime.OrtBackend(session)
        self.protocol = runs_for(settings.protocol, cost_model.target.percentile)
        self.feeds = runtime.make_feeds(settings.batch, settings.seq_len, self.sb.dims.vocab_size)
        self.reference = None
        self.clock = ShipClock(cost_model)
        self.polisher: Callable[[Arch], Polished] | None = None
        self.provenance: dict[str, Any] | None = None
        self.rejected: list[dict[str, Any]] = []
        self.gate = None  # set by the first candidate that gets as far as its dev metric
        self.over_budget: Arch | None = None  # the last candidate measured over budget
        self.labels = class_names(super_bert.config, data.task)
        # costs at the shapes timed: the cost model's own (computed once) when they agree
        same = (cost_model.seq_len, cost_model.batch) == (settings.seq_len, settings.batch)
        dims = super_bert.dims
        self.static_costs = (
            cost_model.arch_costs
            if same
            else lambda a: arch_costs(a, dims, settings.seq_len, settings.batch)
        )

    def calibrate_now(self) -> None:
        """Predictions at the speed of this machine now (the reference timed alone)."""
        if self.reference is None:
            return
        stats = runtime.measure(self.backend, self.reference, self.feeds, self.protocol)
        self.clock.alone = list(stats.samples)
        if self.target.tail is not None:  # the tail of this machine now
            tail = tail_ratio(stats.samples, self.target.percentile)
            self.base = self.clock.base = self.base.recalibrated(
                self.base.reference_ms, self.base.correction, tail
            )
        self.model = self.base.recalibrated(self.clock.reference_ms())

    def ship(self, candidates: list[Arch], out_dir: Path) -> Shipped:
        queue = list(candidates[: self.settings.max_candidates])
        tried: set[str] = set()
        while len(tried) < self.settings.max_candidates * 2:  # exports, corrections included
            if not queue:
                if self.over_budget is None:
                    break
                # measured over budget with nothing left: go down from it, with the cost
                # model corrected by what was just measured
                queue.append(self.over_budget)
                self.over_budget = None
            arch = queue.pop(0)
            if arch.arch_id in tried or not self._worth_timing(arch):
                fixed = self._repair(arch, tried)
                if arch.arch_id not in tried:
                    self._reject(arch, "predicted over a budget at today's speed")
                if fixed is None:
                    continue
                self.say(
                    f"{self.target.name}: {arch.short()} -> {fixed.short()} (repaired "
                    "to the budget boundary by the corrected cost model)"
                )
                arch = fixed
            tried.add(arch.arch_id)
            shipped = self._try(arch, out_dir)
            if shipped is not None:
                return shipped
        return self._give_up(len(tried) >= self.settings.max_candidates * 2)

    def _worth_timing(self, arch: Arch) -> bool:
        """Feasible by the cost model as corrected so far. Before anything was timed
        beside the reference, today's speed rests on one timing of the reference alone,
        which a passing slow spell can make far too slow: a candidate whose only broken
        budget is that predicted latency is then timed, and the measurement decides."""
        if self.model.feasible(arch):
            return True
        return not self.clock.ratios and self.model.target.broken(self.model.costs(arch)) == [
            "latency"
        ]

    def _repair(self, arch: Arch, tried: set[str]) -> Arch | None:
        """The first sub-BERT below ``arch`` that the corrected cost model calls feasible
        and that was not timed yet; None when there is none."""
        from yoco_deploy.deploy.repair import repair

        def fits(a: Arch) -> bool:
            return a.arch_id not in tried and self.model.feasible(a)

        fixed = repair(arch, self.base.space, fits, self.settings.seq_len)
        return fixed if fits(fixed) else None

    def _reject(self, arch: Arch, why: str, **extra) -> None:
        self.rejected.append({"arch_id": arch.arch_id, "why": why, **extra})

    def _try(self, arch: Arch, out_dir: Path) -> Shipped | None:
        """One candidate, one step per job: export, time, check the budgets, polish,
        score and gate, write; None when a check rejects it (the reason is recorded)."""
        with tempfile.TemporaryDirectory(prefix="yoco-ship-") as tmp:
            built = self._export(self.sb, arch, Path(tmp))
            timed = self._time(arch, built)
            if not self._within_budgets(arch, built, timed):
                return None
            sb, built, polish = self._polish(arch, built, Path(tmp) / "polished")
            metric = self._score(arch, built)
            if metric is None:
                return None
            bundle = Path(out_dir) / bundle_name(self.target, timed.latency_ms, metric, arch)
            manifest = bundle_manifest(self, bundle.name, arch, built.report, timed, metric)
            manifest = replace(manifest, polish=polish, provenance=self.provenance)
            manifest = write_bundle(bundle, sb, arch, self.tokenizer, manifest, built.path)
            return Shipped(bundle, manifest, self.rejected)

    def _export(self, super_bert, arch: Arch, folder: Path) -> _Built:
        """The deploy file, with the metadata it ships with (the digest is set at write,
        same length): the size checked is the size shipped."""
        from yoco_deploy.export.sub_bert import ExportOptions, export_sub_bert

        settings = self.settings
        options = ExportOptions.for_format(settings.fmt, save_model_dir=False)
        report = export_sub_bert(
            super_bert, arch, folder, options, self.tokenizer, settings.seq_len,
            settings.batch, costs=self.static_costs(arch),
        )  # fmt: skip
        props = onnx_metadata.props_for(arch, self.labels, settings.seq_len, settings.fmt)
        onnx_metadata.embed(report.deploy_file, props)
        return _Built(report)

    def _time(self, arch: Arch, built: _Built) -> _Timed:
        """Timed beside the reference until the budget decision is settled (or a cap);
        the cost model is corrected by what was measured."""
        handle = self.backend.load(built.path)
        stats = runtime.measure(
            self.backend, handle, self.feeds, self.protocol, self.reference,
            settled=lambda stats: self.clock.settled(stats, self.model),
        )  # fmt: skip
        latency_ms, lo_ms, hi_ms, median_ms = self.clock.reading(stats)
        clear = self.clock.settled(stats, self.model)
        rounds = self.clock.record(stats, clear)
        budget_ms = self.clock.budget_ms(stats, self.model)
        self.clock.keep(stats)
        checked_ms = hi_ms if (tail := self.target.tail is not None) else latency_ms
        calibrated, corrected = self.clock.calibrate(arch, stats, latency_ms, checked_ms)
        self.model = corrected or self.model
        if not clear:
            self.say(
                f"warning: {self.target.name}: {arch.short()} measured {latency_ms:.3f} ms "
                f"({lo_ms:.3f}-{hi_ms:.3f}) against a budget of {budget_ms:.3f} ms after "
                f"{stats.rounds} rounds: the machine's noise leaves the budget unsettled; "
                f"{'the upper end' if tail else 'the median'} decides"
            )
        return _Timed(stats, latency_ms, {**calibrated, **rounds}, checked_ms, median_ms)

    def _within_budgets(self, arch: Arch, built: _Built, timed: _Timed) -> bool:
        """Every budget against what was measured (the latency) or written (the file)."""
        measured = {**self.model.costs(arch), "latency": timed.checked_ms, "size": built.size_mb}
        broken = self.model.target.broken_in_words(measured)
        if not broken:
            return True
        if "latency" in self.model.target.broken(measured):
            self.over_budget = arch
        self._reject(arch, "; ".join(broken), measured_ms=timed.latency_ms)
        bound = f", the upper end of its {self.target.statistic}" * (self.target.tail is not None)
        self.say(f"{self.target.name}: {arch.short()} rejected ({'; '.join(broken)}{bound}); next")
        return False

    def _polish(self, arch: Arch, built: _Built, folder: Path):
        """(super-BERT, export, polish record) of what ships: the polished weights when
        ``settings.polish`` kept them (after the budgets: the weights change, not the
        speed), else the candidate as it was timed."""
        if self.polisher is None:
            return self.sb, built, None
        polished = self.polisher(arch)
        if not polished.kept:
            return self.sb, built, polished.record
        return polished.super_bert, self._export(polished.super_bert, arch, folder), polished.record

    def _score(self, arch: Arch, built: _Built) -> dict[str, Any] | None:
        """The task metric of the file that ships, on dev, through the quality gate;
        None when the gate rejects it."""
        settings = self.settings
        metric = onnx_metric(built.path, self.data, self.tokenizer, settings.seq_len, self.session)
        self.gate = gate = quality_gate(
            self.data, metric["name"], settings.min_metric, settings.allow_weak
        )
        if gate.passes(metric["value"]):
            return metric
        weak = f"{metric['name']} {metric['value']:.3f} below the floor {gate.floor:.3f}"
        if not gate.allow_weak:
            self._reject(arch, weak, metric=metric["value"])
            self.say(f"{self.target.name}: {arch.short()} rejected ({weak}); next")
            return None
        self.say(f"warning: {self.target.name}: {arch.short()} shipped with --allow-weak ({weak})")
        return metric

    def _give_up(self, capped: bool):
        scores = [r["metric"] for r in self.rejected if "metric" in r]
        if self.gate is not None and scores:
            raise self.gate.refusal(max(scores), self.target.label())
        measured = [r for r in self.rejected if "measured_ms" in r]
        closest = ""
        if measured:
            best = min(measured, key=lambda r: r["measured_ms"])
            closest = (
                f"; the closest was {best['arch_id']} at {best['measured_ms']:.2f} ms "
                f"({len(measured)} timed, predictions corrected after each)"
            )
        why = (
            f"none of the {self.settings.max_candidates * 2} sub-BERTs timed meets its budgets"
            if capped
            else "nothing in the space meets its budgets"
        )
        raise BudgetError(f"target {self.target.label()}: {why} on this device{closest}")
