"""Stage II, one way for everyone: a ``DeployJob`` says which targets, how to search, how
to ship, and where predictors, search logs and bundles live. The CLI's ``search`` and
``ship`` and the pipeline's search-ship stage each build one and call the same methods,
so a target is wired one way and named by one folder (``Target.slug``)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

from yoco_deploy.arch import Arch
from yoco_deploy.deploy.budgets import (
    BudgetError,
    CostModel,
    Target,
    check_distinct,
    load_predictor,
)
from yoco_deploy.deploy.search import Search, SearchResult, SearchSettings
from yoco_deploy.deploy.search_types import SearchError
from yoco_deploy.deploy.ship import Shipped, ShipSettings, ship_target
from yoco_deploy.deploy.supernet import Supernet, make_evaluator
from yoco_deploy.errors import YocoError
from yoco_deploy.runtime import Protocol, resolve_provider
from yoco_deploy.util.atomic import write_text

T = TypeVar("T")

# progress of one search: (evaluations done, evaluations planned, seconds left or None)
Progress = Callable[[int, int, float | None], None]


def cost_model_for(
    target: Target,
    supernet: Supernet,
    predictor_file: Path,
    seq_len: int,
    batch: int,
    fmt: str | None = None,
    reference_ms: float | None = None,
) -> CostModel:
    """The target's costs at its own shape (``seq_len`` and ``batch``: the run's, where
    the target names none); cost models are built here and nowhere else. A latency
    budget needs the device's predictor (``predictor_file``, which must exist, profiled
    at shapes around the target's); other budgets are closed-form, and the bundle then
    runs with ship's default session."""
    space = supernet.super_bert.space
    batch, seq_len = target.shape(batch, seq_len)
    space.dims.check_seq_len(seq_len)
    predictor = None
    if target.needs_predictor:
        predictor = load_predictor(target.name, Path(predictor_file), space)
        try:
            predictor.check_shape(batch, seq_len)
        except YocoError as err:
            raise BudgetError(f"target {target.label()}: {err}") from None
    return CostModel(target, space, predictor, seq_len, batch, reference_ms, fmt=fmt)


@dataclass(frozen=True)
class DeployJob:
    """Stage II for some targets: how to search, how to ship (``ship`` also fixes the
    shapes and format every cost is computed at), and where the devices' predictors, the
    search logs and the bundles live."""

    targets: tuple[Target, ...]
    search: SearchSettings = field(default_factory=SearchSettings)
    ship: ShipSettings = field(default_factory=ShipSettings)  # also the shapes and format
    shipping: bool = True  # False: search only
    predictors: Path = Path("predictors")  # NAME.json per device
    predictor_files: Mapping[str, Path] = field(default_factory=dict)  # NAME: a file instead
    logs: Path = Path("runs/search")
    bundles: Path = Path("bundles")
    polish_runs: Path | None = None  # where polish trains (default: bundles/.polish)
    cold: bool = False  # ESNG from a uniform theta, not the trained one
    calibrate: bool = False  # predictions at the speed of this machine now
    fresh: bool = False  # set each target's existing search log aside and start anew

    def __post_init__(self) -> None:
        # folders given as text and targets as a list are what a caller naturally writes
        for name in ("predictors", "logs", "bundles"):
            object.__setattr__(self, name, Path(getattr(self, name)))
        object.__setattr__(self, "targets", tuple(self.targets))
        check_distinct([(t.label(), t) for t in self.targets])

    def predictor_file(self, device: str) -> Path:
        return Path(self.predictor_files.get(device) or self.predictors / f"{device}.json")

    def log_path(self, cm: CostModel) -> Path:
        """Where a target's search is logged: one folder per target as the user wrote it
        (``latency=55%`` stays a share, so a rerun at another machine speed resumes the
        same log, and the pipeline's bundle folder has the same name), one log per
        algorithm and seed. A log written under the resolved budget's name (before
        0.1.0's restructuring), or under a long name cut at 100 characters (before long
        names ended with a hash), is resumed where it is, when no other target of this
        job had that cut name."""
        name = f"search-{self.search.algo}-seed{self.search.seed}.jsonl"
        log = self.logs / cm.requested.slug() / name
        if log.exists():
            return log
        for folder in (cm.target.slug(), cm.requested.cut_slug(), cm.target.cut_slug()):
            older = self.logs / folder / name if folder else None
            if older is not None and older.is_file():
                self._check_unshared(folder, older)
                return older
        return log

    def _check_unshared(self, folder: str, older: Path) -> None:
        """A cut folder that several of this job's targets had cannot say whose it is."""
        sharing = [t for t in self.targets if t.cut_slug() == folder]
        if len(sharing) > 1:
            owners = " or ".join(str(self.logs / t.slug()) for t in sharing)
            raise SearchError(
                f"{older} was written when long target names were cut at 100 characters, "
                f"and {len(sharing)} targets had that name: move it into the folder of the "
                f"target it belongs to ({owners}), or away to search afresh"
            )

    def cost_models(
        self, net: Supernet, say: Callable[[str], None] = print, searching: bool = True
    ) -> list[CostModel]:
        """Every target's cost model, checked before any long work: some sub-BERT fits by
        the cost model (before a search; ``ship`` alone times today's speed and decides
        by measurement), and the bundle's session is one the device's profile allows,
        on a provider here."""
        s = self.ship
        models = [
            cost_model_for(t, net, self.predictor_file(t.name), s.seq_len, s.batch, s.fmt)
            for t in self.targets
        ]
        if self.calibrate:
            models = _calibrated(models, say)
        if searching:  # ship times each candidate's own tail (ShipRun.calibrate_now)
            models = [_with_tail(cm, say) for cm in models]
        for cm in models:
            if searching:
                cm.check_achievable()
            if self.shipping:  # a session that contradicts the profile fails now
                resolve_provider(s.session_for(cm).provider)
        return models

    def run_search(
        self,
        net: Supernet,
        cm: CostModel,
        evaluator=None,
        progress: Progress | None = None,
        main_process: bool = True,
    ) -> SearchResult:
        """Search one target; rerunning resumes from its log, if the log was made with
        this super-BERT, data and space (``fresh``: start anew). Under
        ``accelerate launch`` every process searches (the same trajectory); only the main
        one writes."""
        settings = replace(self.search, warm_theta=None if self.cold else net.theta)
        evaluator = evaluator or make_evaluator(net, settings.seed)
        log = self.log_path(cm)
        space = net.super_bert.space
        result = Search(
            space, cm, evaluator, settings, log, progress, main_process, net.score_inputs,
            self.fresh,
        ).run()  # fmt: skip
        if main_process:  # in the target's own folder, also when an older log was resumed
            folder = self.logs / cm.requested.slug()
            folder.mkdir(parents=True, exist_ok=True)
            write_text(folder / "result.json", json.dumps(result_body(cm, result), indent=1))
        return result

    def run_ship(self, net: Supernet, cm: CostModel, candidates: list[Arch], say=print) -> Shipped:
        """The first candidate, in rank order, that meets every budget as measured
        (polished first, when ``ship.polish`` asks)."""
        from yoco_deploy.deploy.polish import unavailable

        polisher = None
        spec = self.ship.polish
        if spec is not None and spec.is_auto and (reason := unavailable(net, spec)) is not None:
            say(f"not polished (the default, auto): {reason}")
        elif spec is not None:
            from yoco_deploy.deploy.polish import polish
            from yoco_deploy.deploy.supernet import SuperBertEvaluator

            evaluator = SuperBertEvaluator(net)
            work = (self.polish_runs or self.bundles / ".polish") / cm.requested.slug()

            def polisher(arch: Arch):
                return polish(net, arch, spec, work, evaluator, say)

        return ship_target(
            net.super_bert, net.tokenizer, net.data, cm, candidates, self.bundles, self.ship,
            say, polisher, net.score_inputs,
        )  # fmt: skip


def _calibrated(models: list[CostModel], say) -> list[CostModel]:
    from yoco_deploy.device.calibrate import time_reference

    refs: dict[str, float] = {}  # one timing per device
    out = []
    for cm in models:
        if cm.predictor is None:
            out.append(cm)
            continue
        name = cm.target.name
        if name not in refs:
            refs[name] = time_reference(cm.predictor, cm.batch, cm.seq_len)
            say(f"{name}: reference model {refs[name]:.2f} ms here now")
        out.append(cm.recalibrated(refs[name]))
    return out


def _with_tail(cm: CostModel, say) -> CostModel:
    """A percentile target's cost model predicts that percentile: the predicted median
    times the percentile's ratio to the median in the reference model's runs at the
    target's shape, timed here now (ship measures each candidate's own)."""
    p = cm.target.percentile
    if cm.predictor is None or p in (None, 50):
        return cm
    from yoco_deploy.deploy.ship_timing import runs_for, tail_ratio
    from yoco_deploy.device.calibrate import reference_latency

    protocol = runs_for(Protocol(), p, interval=False)  # a point estimate steers a search
    runs = reference_latency(cm.predictor, cm.batch, cm.seq_len, protocol)
    tail = tail_ratio(runs.samples, p)
    say(
        f"{cm.target.name}: at batch {cm.batch} x seq {cm.seq_len} the reference model's "
        f"{cm.target.statistic} is {tail:.2f}x its median here now ({runs.runs} runs)"
    )
    return cm.recalibrated(cm.reference_ms, cm.correction, tail)


def result_body(cm: CostModel, result: SearchResult) -> dict:
    """A search's result.json: the target and its ranked candidates."""
    ranked = [
        {
            "arch": c.arch.to_dict(),
            "arch_id": c.arch.arch_id,
            "fitness": c.fitness,
            "rescore": c.rescore,
            "costs": c.costs,
        }
        for c in result.ranked
    ]
    return {
        "target": cm.target.label(),
        "evaluations": result.evaluations,
        "exhausted": result.exhausted,
        "ranked": ranked,
    }


# ---- several targets: each one shipped or refused, the others go on ----------------------


class TargetsRefused(YocoError):
    """Some targets were refused (their budgets, their quality gate, their search log);
    the others went on."""

    def __init__(self, refused: Mapping[str, str], total: int, rerun: str):
        self.refused = dict(refused)
        names = ", ".join(repr(t) for t in refused)
        others = "; the others went on" if total > len(refused) else ""
        super().__init__(
            f"{len(refused)} of {total} targets refused (each reason is above{others}): "
            f"{names}; {rerun}"
        )


def attempt(label: str, work: Callable[[], T], refused: dict[str, str], say) -> T | None:
    """``work()`` for one target, or None when the target is refused (a ``YocoError``:
    its budgets, its quality gate, its search log): the reason is said and kept in
    ``refused``, and the caller goes on with the next target. Anything else (Ctrl-C,
    SIGTERM, an OS error, a bug) stops the run."""
    try:
        return work()
    except YocoError as err:
        refused[label] = str(err)
        say(f"refused {label}: {err}")
        return None
