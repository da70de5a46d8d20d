"""Profile a device here: which sub-BERTs, timed in what order, and when to stop (active
refinement). The files timed come from :mod:`yoco_deploy.device.artifacts`; the profile
directory itself is :mod:`yoco_deploy.device.profile_store`; remote devices,
:mod:`yoco_deploy.device.remote_profile`.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from yoco_deploy import runtime
from yoco_deploy.arch import Arch
from yoco_deploy.device.artifacts import (
    ArtifactBuilder,
    export_work,
)
from yoco_deploy.device.profile_store import (
    ProfileError,
    ProfileSettings,
    device_record,
    load_training_data,
    plan_jobs,
    prepare_profile_dir,
    reference_arch,
)
from yoco_deploy.device.sample_design import SpaceFillingDesign
from yoco_deploy.runtime.runner import print_progress
from yoco_deploy.space import SearchSpace


@dataclass
class ProfileResult:
    path: Path
    rows_written: int
    measured: int
    rounds: list[dict[str, Any]]
    wall_s: float
    set_aside: list[str] = field(default_factory=list)  # what --repair moved out of the log
    graphs: str = "export"  # how the timed graphs were made: exported, or "cut" (slice_graph)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "path": str(self.path)}


Progress = Callable[[int, int, float | None, str], None]


def profile_device(
    space: SearchSpace,
    out: Path,
    name: str,
    settings: ProfileSettings,
    model: str,
    progress: Progress | None = None,
    until: tuple[str, float] | None = None,
    near_ms: tuple[float, ...] = (),
    first_round: int | None = None,
    step: int = 10,
    repair: bool = False,
    backend=None,
    exclude: set[str] | frozenset[str] = frozenset(),
    prior: dict[str, Any] | None = None,
) -> ProfileResult:
    """Profile ``settings.n`` sub-BERTs (or fewer, if ``until`` is reached first); one
    process per profile folder (a lock beside it, ``NAME.lock``). ``prior``: another
    device's predictor model, which ``until`` judges adapted (``device/prior.py``)."""
    from yoco_deploy.util.lock import exclusive

    for _, seq_len in settings.shapes:
        space.dims.check_seq_len(seq_len)
    out = Path(out)
    with exclusive(out.with_name(out.name + ".lock"), f"profile folder {out}"), _frozen_heap():
        return _profile(
            space, out, name, settings, model, progress, until, near_ms, first_round, step,
            repair, backend, exclude, prior,
        )  # fmt: skip


@contextlib.contextmanager
def _frozen_heap() -> Iterator[None]:
    """Everything alive when profiling starts (torch, transformers, the caller's objects)
    is left out of garbage collection until it ends: each timing starts with a full
    collection, which scanned that whole heap every time (0.35 s a call, a third of a
    test profile's time). What becomes garbage meanwhile is collected after."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _profile(
    space, out, name, settings, model, progress, until, near_ms, first_round, step, repair,
    backend, exclude, prior,
) -> ProfileResult:  # fmt: skip
    started = time.monotonic()
    backend = backend or runtime.OrtBackend(settings.session)
    fingerprint = runtime.device_fingerprint(settings.session)
    record = device_record(name, space, settings, fingerprint, model)
    log = prepare_profile_dir(out, record, repair)
    rounds: list[dict[str, Any]] = []
    design = SpaceFillingDesign(space, settings.seed)
    with export_work(out) as tmp:
        builder = ArtifactBuilder(space, settings.fmt, tmp, settings.seed)
        with contextlib.closing(builder):  # its export workers end with the profile
            first = min(settings.n, first_round or settings.n) if until else settings.n
            done = _at_every_shape(log, settings.shapes)
            # a resumed profile finishes its design; a larger --n adds only what it lacks
            # (a design of n is another Latin hypercube, not the old one plus n - old)
            fresh = [a for a in design.sample(first, exclude=set(exclude)) if a.arch_id not in done]
            archs = fresh[: max(0, first - len(done))]
            # the reference with the first stretch to time: the workers export it too
            ahead = archs[: settings.protocol.ref_every]
            builder.prepare([reference_arch(space), *ahead])
            ref_path = builder.build(reference_arch(space))
            written = 0
            while True:
                jobs = plan_jobs(archs, settings.shapes, settings.seed + len(rounds))
                by_id = {a.arch_id: a for a in archs}
                written += runtime.run_jobs(
                    jobs,
                    lambda job, by_id=by_id: builder.build(by_id[job.arch_id]),
                    ref_path,
                    log,
                    backend,
                    settings.protocol,
                    vocab_size=space.dims.vocab_size,
                    progress=progress or print_progress,
                    release=lambda job: builder.release(job.arch_id),
                    prepare=lambda stretch, by_id=by_id: builder.prepare(
                        [by_id[job.arch_id] for job in stretch]
                    ),
                )
                measured = {row["arch_id"] for row in log.latest().values()}
                if not until or len(measured) >= settings.n:
                    break
                status = refinement_status(out, until, prior)
                rounds.append({"profiled": len(measured), **status})
                if status["met"]:
                    break
                archs = pick_refinement(
                    out,
                    space,
                    design,
                    measured | set(exclude),
                    near_ms,
                    min(step, settings.n - len(measured)),
                )
    measured = len({row["arch_id"] for row in log.latest().values()})
    wall = time.monotonic() - started
    return ProfileResult(
        Path(out), written, measured, rounds, wall, log.set_aside, graphs=builder.method
    )


def _at_every_shape(log, shapes) -> set[str]:
    """Sub-BERTs the profile holds at every shape asked for: a profile extended to more
    shapes measures its earlier sub-BERTs at the new ones too."""
    have: dict[str, set[tuple[int, int]]] = {}
    for row in log.latest().values():
        have.setdefault(row["arch_id"], set()).add((row["batch"], row["seq_len"]))
    return {arch for arch, got in have.items() if set(map(tuple, shapes)) <= got}


UNTIL_METRICS = {"within5": "min", "within10": "min", "kendall_tau": "min", "mape": "max"}


def parse_until(text: str) -> tuple[str, float]:
    metric, _, value = text.partition("=")
    if metric not in UNTIL_METRICS or not value:
        raise ProfileError(f"--until takes METRIC=VALUE with METRIC in {', '.join(UNTIL_METRICS)}")
    try:
        number = float(value)
    except ValueError:
        raise ProfileError(f"--until value {value!r} is not a number") from None
    bounded = metric != "mape"  # shares and Kendall's tau cannot exceed 1
    if not (0 < number <= 1 if bounded else number > 0):
        limits = "above 0 and at most 1" if bounded else "above 0"
        raise ProfileError(f"--until {metric}={value} can never be met: use a value {limits}")
    return metric, number


def refinement_status(
    path: Path, until: tuple[str, float], prior: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Cross-validated accuracy of the best predictor on what is profiled so far (adapted
    from ``prior``, another device's predictor model, when given)."""
    from yoco_deploy.device.predictor import select_and_fit
    from yoco_deploy.device.prior import select_with_prior

    data, dims = load_training_data(path)
    if prior is not None:
        model, selection = select_with_prior(data, dims, prior)
    else:
        model, selection = select_and_fit(data, dims)
    metric, target = until
    value = selection[model["type"]][metric]
    met = value >= target if UNTIL_METRICS[metric] == "min" else value <= target
    return {
        "metric": metric,
        "value": value,
        "target": target,
        "met": bool(met),
        "model": model["type"],
    }


def pick_refinement(
    path: Path,
    space: SearchSpace,
    design: SpaceFillingDesign,
    measured: set[str],
    near_ms: tuple[float, ...],
    count: int,
    pool: int = 400,
) -> list[Arch]:
    """Where the linear and tree models disagree most (and near a user's budgets)."""
    from yoco_deploy.device.predictor import _design, apply_model, fit_model

    data, dims = load_training_data(path)
    candidates = design.sample(pool, exclude=measured)
    batch, seq = data.shapes[0]
    preds = {}
    for kind in ("linear", "gbrt"):
        model = fit_model(kind, _design(data.archs, data.shapes, dims, kind), data.rel)
        x = _design(candidates, [(batch, seq)] * len(candidates), dims, kind)
        preds[kind] = apply_model(model, x)
    mean = np.maximum((preds["linear"] + preds["gbrt"]) / 2, 1e-9)
    score = np.abs(preds["linear"] - preds["gbrt"]) / mean
    if near_ms:
        ms = mean * float(np.median(data.ref_ms))
        near = np.min([np.abs(ms / b - 1) for b in near_ms], axis=0) <= 0.15
        score = score + near.astype(float)
    return [candidates[i] for i in np.argsort(-score)[:count]]
