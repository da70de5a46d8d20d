"""Profile a device here: which sub-BERTs, exported how, timed in what order, and when
to stop (active refinement). Latency depends on shapes, not weights, so profiling exports
sub-BERTs of a randomly initialised model of the right dimensions. The profile directory
itself is :mod:`yoco_deploy.device.profile_store`; remote devices,
:mod:`yoco_deploy.device.remote_profile`.
"""

from __future__ import annotations

import contextlib
import gc
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from yoco_deploy import runtime
from yoco_deploy.arch import Arch
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


def random_super_bert(space: SearchSpace, seed: int = 0):
    """A super-BERT with random weights and the space's dimensions (for timing only)."""
    import torch
    from transformers import BertForSequenceClassification

    from yoco_deploy.model.super_bert import SuperBert

    config = space.dims.bert_config()
    torch.manual_seed(seed)
    return SuperBert(BertForSequenceClassification(config).eval(), space).eval()


class ArtifactBuilder:
    """Exports sub-BERTs in the deploy format into a work directory, on demand.

    What is timed needs the right graph, not checked numbers: the export is not validated
    against PyTorch unless ``validate`` (ship validates what it ships; the profile's
    weights are random). ``prepare`` exports a stretch of sub-BERTs in ``workers``
    processes at once, before that stretch is timed, so exports never run beside a
    timing; ``build`` alone exports in this process."""

    def __init__(
        self,
        space: SearchSpace,
        fmt: str,
        work: Path,
        seed: int = 0,
        validate: bool = False,
        workers: int | None = None,
    ):
        self.space, self.fmt, self.seed, self.validate = space, fmt, seed, validate
        self.workers = workers if workers is not None else min(2, os.cpu_count() or 1)
        self.work = Path(work)
        self.built: dict[str, Path] = {}
        self._super_bert = None
        self._pool = None

    @property
    def super_bert(self):
        if self._super_bert is None:
            self._super_bert = random_super_bert(self.space, self.seed)
        return self._super_bert

    def build(self, arch: Arch) -> Path:
        """Export once; later calls (a drift re-measurement) reuse the file."""
        if arch.arch_id not in self.built:
            self.built[arch.arch_id] = _export_for_timing(
                self.super_bert, arch, self.work / arch.arch_id, self.fmt, self.validate
            )
        return self.built[arch.arch_id]

    def prepare(self, archs: list[Arch]) -> None:
        """Export every arch not built yet, ``workers`` at a time; returns when all are."""
        todo = list({a.arch_id: a for a in archs if a.arch_id not in self.built}.values())
        if self.workers < 2 or len(todo) < 2 or not self.worth_workers():
            for arch in todo:
                self.build(arch)
            return
        if self._pool is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            # spawned, not forked: a fork of a process with torch's threads can hang
            self._pool = ProcessPoolExecutor(
                self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_worker_start,
                initargs=(self.space, self.seed),
            )
        jobs = [
            (arch, self._pool.submit(_worker_export, arch, self.work / arch.arch_id, self.fmt,
                                     self.validate))
            for arch in todo
        ]  # fmt: skip
        for arch, job in jobs:
            self.built[arch.arch_id] = job.result()

    def worth_workers(self) -> bool:
        """A spawned worker takes seconds to start (torch's import, the random model):
        worth it for models whose export takes as long (MiniLM's: 4 s), not for a tiny
        test space's (a fraction of a second)."""
        if self._pool is not None:
            return True
        from yoco_deploy.costs import arch_costs

        return arch_costs(self.space.max_arch(), self.space.dims).params >= POOL_WORTH_PARAMS

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def release(self, arch_id: str) -> None:
        self.built.pop(arch_id, None)
        shutil.rmtree(self.work / arch_id, ignore_errors=True)
        gc.collect()  # the exporter leaves large reference cycles behind


def _export_for_timing(super_bert, arch: Arch, out: Path, fmt: str, validate: bool) -> Path:
    from yoco_deploy.export.sub_bert import ExportOptions
    from yoco_deploy.export.sub_bert import export_sub_bert as export
    from yoco_deploy.export.to_onnx import OnnxSpec

    # validated (when asked) at one small shape: the weights are random
    spec = OnnxSpec(validation_shapes=((1, 16),))
    options = ExportOptions.for_format(
        fmt, int8_samples=4, save_model_dir=False, spec=spec, validate=validate
    )
    deploy = export(super_bert, arch, out, options).deploy_file
    for other in out.iterdir():  # a stretch of exports waits on disk: keep only what is timed
        if other != deploy and other.is_file():
            other.unlink()
    return deploy


_WORKER: dict[str, Any] = {}
POOL_WORTH_PARAMS = 5_000_000


def _worker_start(space: SearchSpace, seed: int) -> None:
    import torch

    torch.set_num_threads(1)  # one export per core
    _WORKER["super_bert"] = random_super_bert(space, seed)


def _worker_export(arch: Arch, out: Path, fmt: str, validate: bool) -> Path:
    return _export_for_timing(_WORKER["super_bert"], arch, out, fmt, validate)


EXPORTS = ".exports"  # inside a profile (or remote bundle) folder


@contextlib.contextmanager
def export_work(folder: Path) -> Iterator[Path]:
    """Where sub-BERTs are exported before they are timed: ``FOLDER/.exports``, emptied
    when the work starts and removed when it ends. A killed profile once left its
    exports, hundreds of MB, in a system temp folder that nothing cleaned; here the next
    run of the same profile cleans them, and the profile's lock keeps the folder to one
    process."""
    work = Path(folder) / EXPORTS
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ---- profiling, locally -------------------------------------------------------------------


@dataclass
class ProfileResult:
    path: Path
    rows_written: int
    measured: int
    rounds: list[dict[str, Any]]
    wall_s: float
    set_aside: list[str] = field(default_factory=list)  # what --repair moved out of the log

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
    with exclusive(out.with_name(out.name + ".lock"), f"profile folder {out}"):
        return _profile(
            space, out, name, settings, model, progress, until, near_ms, first_round, step,
            repair, backend, exclude, prior,
        )  # fmt: skip


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
            done = {row["arch_id"] for row in log.latest().values()}
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
    return ProfileResult(Path(out), written, measured, rounds, wall, log.set_aside)


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
