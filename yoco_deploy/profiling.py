"""Profile a device: which sub-BERTs, exported how, timed where, stored how.

A profile directory holds ``device.json`` (the device fingerprint and what was profiled:
space, export format, shapes, reference model) and ``measurements.jsonl`` (append-only,
written by :mod:`yoco_deploy.runner`). Latency depends on shapes, not weights, so
profiling exports sub-BERTs of a randomly initialised model of the right dimensions.
"""

from __future__ import annotations

import gc
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from yoco_deploy import runner
from yoco_deploy.arch import Arch
from yoco_deploy.atomic import write_text
from yoco_deploy.design import SpaceFillingDesign
from yoco_deploy.errors import YocoError
from yoco_deploy.space import ModelDims, SearchSpace

DEVICE_SCHEMA = 1
MEASUREMENTS = "measurements.jsonl"
DEVICE = "device.json"


class ProfileError(YocoError):
    """A profile directory is unusable or does not match what was asked."""


@dataclass(frozen=True)
class ProfileSettings:
    """What to profile and how; recorded in device.json."""

    n: int = 150
    shapes: tuple[tuple[int, int], ...] = ((1, 128),)  # (batch, seq_len)
    session: runner.SessionSpec = field(default_factory=lambda: runner.SessionSpec(threads=2))
    fmt: str = "int8"
    seed: int = 0
    protocol: runner.Protocol = field(default_factory=runner.Protocol)

    def __post_init__(self) -> None:
        if self.n < 2:
            raise ProfileError("profile at least 2 sub-BERTs (the min and the max)")
        for batch, seq in self.shapes:
            if batch < 1 or seq < 1:
                raise ProfileError(f"batch and sequence length must be positive: {batch}x{seq}")


def reference_arch(space: SearchSpace) -> Arch:
    """A mid-sized sub-BERT: the middle depth, head and FFN choices."""

    def mid(choices: tuple[int, ...]) -> int:
        return choices[(len(choices) - 1) // 2]

    depth, heads, ffn = mid(space.depth_choices), mid(space.head_choices), mid(space.ffn_choices)
    return Arch.uniform(depth, heads, ffn)


def random_super_bert(space: SearchSpace, seed: int = 0):
    """A super-BERT with random weights and the space's dimensions (for timing only)."""
    import torch
    from transformers import BertForSequenceClassification

    from yoco_deploy.super_bert import SuperBert

    config = space.dims.bert_config()
    torch.manual_seed(seed)
    return SuperBert(BertForSequenceClassification(config).eval(), space).eval()


class ArtifactBuilder:
    """Exports sub-BERTs in the deploy format into a work directory, on demand."""

    def __init__(self, space: SearchSpace, fmt: str, work: Path, seed: int = 0):
        from yoco_deploy.export import ExportOptions
        from yoco_deploy.onnx_export import OnnxSpec

        self.super_bert = random_super_bert(space, seed)
        # timing needs a correct graph, not a thorough one: validate at one small shape
        spec = OnnxSpec(validation_shapes=((1, 16),))
        self.options = ExportOptions.for_format(
            fmt, int8_samples=4, save_model_dir=False, spec=spec
        )
        self.work = Path(work)
        self.built: dict[str, Path] = {}

    def build(self, arch: Arch) -> Path:
        """Export once; later calls (a drift re-measurement) reuse the file."""
        from yoco_deploy.export import export_sub_bert

        if arch.arch_id not in self.built:
            out = self.work / arch.arch_id
            self.built[arch.arch_id] = export_sub_bert(
                self.super_bert, arch, out, self.options
            ).deploy_file
        return self.built[arch.arch_id]

    def release(self, arch_id: str) -> None:
        self.built.pop(arch_id, None)
        shutil.rmtree(self.work / arch_id, ignore_errors=True)
        gc.collect()  # the exporter leaves large reference cycles behind


# ---- the profile directory -------------------------------------------------------------------


def device_record(
    name: str, space: SearchSpace, settings: ProfileSettings, fingerprint: dict, model: str
) -> dict[str, Any]:
    ref = reference_arch(space)
    return {
        "schema": DEVICE_SCHEMA,
        "name": name,
        "fingerprint": fingerprint,
        "model": model,
        "space": space.shape_dict(),
        "format": settings.fmt,
        "shapes": [list(s) for s in settings.shapes],
        "reference": {"arch": ref.to_dict(), "arch_id": ref.arch_id},
        "protocol": settings.protocol.to_dict(),
        "created": time.time(),
    }


_MUST_MATCH = {
    "space": "search space",
    "format": "export format",
    "reference": "reference model",
}
_DEVICE_MUST_MATCH = ("cpu", "logical_cores")


def check_compatible(path: Path, existing: dict[str, Any], wanted: dict[str, Any]) -> None:
    problems = [
        f"{label} differs" for key, label in _MUST_MATCH.items() if existing.get(key) != wanted[key]
    ]
    old, new = existing.get("fingerprint", {}), wanted["fingerprint"]
    problems += [
        f"{key} was {old.get(key)!r}, now {new.get(key)!r}"
        for key in _DEVICE_MUST_MATCH
        if old.get(key) != new.get(key)
    ]
    # sessions compared as specs: a profile made before specs were recorded reads as
    # spinning off, and can be extended with --spinning off
    was, now = runner.recorded_session(old), runner.recorded_session(new)
    if was != now:
        problems.append(f"it was timed with {was.describe()}, now {now.describe()}")
    if problems:
        raise ProfileError(
            f"{path} holds a profile of something else ({'; '.join(problems)}); nothing was "
            "changed. Use another --device name, or move that directory away"
        )


def read_device(path: Path) -> dict[str, Any]:
    file = Path(path) / DEVICE
    try:
        data = json.loads(file.read_text())
    except OSError:
        raise ProfileError(f"{path} is not a profile directory (no {DEVICE})") from None
    except ValueError as err:
        raise ProfileError(f"{file} is not valid JSON: {err}") from None
    if not isinstance(data, dict) or data.get("schema") != DEVICE_SCHEMA or "space" not in data:
        raise ProfileError(f"{file} is not a yoco-deploy device file (schema {DEVICE_SCHEMA})")
    return data


def open_log(path: Path, repair: bool = False) -> runner.MeasurementLog:
    file = Path(path) / MEASUREMENTS
    if repair:
        runner.MeasurementLog.repair(file)
    try:
        return runner.MeasurementLog(file)
    except runner.RunnerError as err:
        raise ProfileError(str(err)) from None


def prepare_profile_dir(
    path: Path, record: dict[str, Any], repair: bool = False
) -> runner.MeasurementLog:
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ProfileError(f"cannot create profile directory {path}: {err.strerror}") from None
    if (path / DEVICE).exists():
        check_compatible(path, read_device(path), record)
    log = open_log(path, repair)  # fails on a corrupt file before anything is written
    if not (path / DEVICE).exists():
        write_text(path / DEVICE, json.dumps(record, indent=2) + "\n")
    return log


def plan_jobs(archs: list[Arch], shapes, seed: int) -> list[runner.Job]:
    """Every (arch, shape), in a seeded shuffled order: size is not confounded with time."""
    jobs = [runner.Job(a.arch_id, b, s, a.to_dict()) for a in archs for b, s in shapes]
    order = np.random.default_rng(seed).permutation(len(jobs))
    return [jobs[i] for i in order]


# ---- profiling, locally -------------------------------------------------------------------


@dataclass
class ProfileResult:
    path: Path
    rows_written: int
    measured: int
    rounds: list[dict[str, Any]]
    wall_s: float

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
) -> ProfileResult:
    """Profile ``settings.n`` sub-BERTs (or fewer, if ``until`` is reached first); one
    process per profile folder (a lock beside it, ``NAME.lock``)."""
    from yoco_deploy.lock import exclusive

    for _, seq_len in settings.shapes:
        space.dims.check_seq_len(seq_len)
    out = Path(out)
    with exclusive(out.with_name(out.name + ".lock"), f"profile folder {out}"):
        return _profile(
            space, out, name, settings, model, progress, until, near_ms, first_round, step,
            repair, backend, exclude,
        )  # fmt: skip


def _profile(
    space, out, name, settings, model, progress, until, near_ms, first_round, step, repair,
    backend, exclude,
) -> ProfileResult:  # fmt: skip
    started = time.monotonic()
    backend = backend or runner.OrtBackend(settings.session)
    fingerprint = runner.device_fingerprint(settings.session)
    record = device_record(name, space, settings, fingerprint, model)
    log = prepare_profile_dir(out, record, repair)
    rounds: list[dict[str, Any]] = []
    design = SpaceFillingDesign(space, settings.seed)
    with tempfile.TemporaryDirectory(prefix="yoco-profile-") as tmp:
        builder = ArtifactBuilder(space, settings.fmt, Path(tmp), settings.seed)
        ref_path = builder.build(reference_arch(space))
        first = min(settings.n, first_round or settings.n) if until else settings.n
        archs = design.sample(first, exclude=set(exclude))
        written = 0
        while True:
            jobs = plan_jobs(archs, settings.shapes, settings.seed + len(rounds))
            by_id = {a.arch_id: a for a in archs}
            written += runner.run_jobs(
                jobs,
                lambda job, by_id=by_id: builder.build(by_id[job.arch_id]),
                ref_path,
                log,
                backend,
                settings.protocol,
                vocab_size=space.dims.vocab_size,
                progress=progress or runner._print_progress,
                release=lambda job: builder.release(job.arch_id),
            )
            measured = {row["arch_id"] for row in log.latest().values()}
            if not until or len(measured) >= settings.n:
                break
            status = refinement_status(out, until)
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
    return ProfileResult(Path(out), written, measured, rounds, time.monotonic() - started)


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


def refinement_status(path: Path, until: tuple[str, float]) -> dict[str, Any]:
    """Cross-validated accuracy of the best predictor on what is profiled so far."""
    from yoco_deploy.predictor import select_and_fit

    data, dims = load_training_data(path)
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
    from yoco_deploy.predictor import _design, apply_model, fit_model

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


# ---- reading a profile --------------------------------------------------------------------


def load_training_data(path: Path, space: SearchSpace | None = None):
    from yoco_deploy.predictor import TrainingData

    device = read_device(path)
    dims = ModelDims(**device["space"]["dims"])
    if space is not None and space.shape_dict() != device["space"]:
        raise ProfileError(f"{path} was profiled for another search space")
    stored = device["space"]
    profile_space = SearchSpace(
        dims, tuple(stored["depth"]), tuple(stored["heads"]), tuple(stored["ffn"])
    )
    rows = list(open_log(path).latest().values())
    if not rows:
        raise ProfileError(f"{path} has no measurements yet: run `yoco-deploy profile` first")
    archs = []
    for row in rows:
        arch = Arch.from_dict(row["arch"])
        if not profile_space.contains(arch):
            raise ProfileError(f"{path}: row {row['key']} is outside the profile's space")
        archs.append(arch)
    return TrainingData(
        archs=archs,
        shapes=[(r["batch"], r["seq_len"]) for r in rows],
        rel=np.array([r["rel"] for r in rows]),
        ms=np.array([r["median_ms"] for r in rows]),
        ref_ms=np.array([r["ref_ms"] for r in rows]),
    ), dims


def profiled_arch_ids(path: Path) -> set[str]:
    return {row["arch_id"] for row in open_log(path).latest().values()}


def profile_digest(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    for name in (DEVICE, MEASUREMENTS):
        file = Path(path) / name
        if file.exists():
            h.update(file.read_bytes())
    return h.hexdigest()


def reference_median(path: Path) -> dict[str, float]:
    """Median reference latency per shape over the whole profile."""
    rows = [r for r in open_log(path).rows if r["kind"] == "reference"]
    by_shape: dict[str, list[float]] = {}
    for r in rows:
        by_shape.setdefault(f"{r['batch']}x{r['seq_len']}", []).append(r["median_ms"])
    return {k: float(np.median(v)) for k, v in by_shape.items()}


# ---- remote devices: bundle out, results in ----------------------------------------------

PLAN = "plan.json"


def write_bundle(
    space: SearchSpace,
    out: Path,
    settings: ProfileSettings,
    model: str,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """ONNX files, plan.json and the standalone runner.py for a device without torch."""
    import hashlib

    out = Path(out)
    models = out / "models"
    measured = out / "results" / MEASUREMENTS
    if measured.is_file() and measured.stat().st_size:
        raise ProfileError(
            f"{out} already holds results measured on a device; import them first "
            f"(yoco-deploy profile-import {out} --device NAME), or write the new bundle "
            "to another folder: a new plan would orphan them"
        )
    try:
        models.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ProfileError(f"cannot create bundle directory {out}: {err.strerror}") from None
    archs = SpaceFillingDesign(space, settings.seed).sample(settings.n)
    ref = reference_arch(space)
    with tempfile.TemporaryDirectory(prefix="yoco-bundle-") as tmp:
        builder = ArtifactBuilder(space, settings.fmt, Path(tmp), settings.seed)
        files = {}
        started = time.monotonic()
        for i, arch in enumerate([ref, *archs]):
            target = models / f"{arch.arch_id}.onnx"
            if not target.exists():  # re-running an interrupted bundle skips done files
                shutil.move(str(builder.build(arch)), target)
                builder.release(arch.arch_id)
            files[arch.arch_id] = f"models/{target.name}"
            if progress:
                eta = (time.monotonic() - started) / (i + 1) * (len(archs) - i)
                progress(i + 1, len(archs) + 1, eta, f"export {arch.arch_id}")
    jobs = plan_jobs(archs, settings.shapes, settings.seed)
    record = device_record("bundle", space, settings, {}, model)
    plan = {
        "schema": DEVICE_SCHEMA,
        "record": record,
        "session": settings.session.to_dict(),
        "vocab_size": space.dims.vocab_size,
        "protocol": settings.protocol.to_dict(),
        "reference": {"file": files[ref.arch_id], "arch": ref.to_dict()},
        "jobs": [
            {
                "arch_id": j.arch_id,
                "arch": j.arch,
                "batch": j.batch,
                "seq_len": j.seq_len,
                "file": files[j.arch_id],
            }
            for j in jobs
        ],
    }
    plan["plan_id"] = hashlib.sha256(json.dumps(plan, sort_keys=True).encode()).hexdigest()[:12]
    (out / PLAN).write_text(json.dumps(plan, indent=1) + "\n")
    shutil.copyfile(runner.__file__, out / "runner.py")
    return plan


def import_bundle(bundle: Path, out: Path, name: str) -> int:
    """Append a bundle's results to ``out`` (a profile directory); return new rows."""
    bundle = Path(bundle)
    try:
        plan = json.loads((bundle / PLAN).read_text())
        fingerprint = json.loads((bundle / "results" / DEVICE).read_text())
    except OSError as err:
        raise ProfileError(
            f"{bundle} has no {Path(err.filename).name}: run `python runner.py {bundle}` on "
            "the device first, then copy the whole directory back"
        ) from None
    except ValueError as err:
        raise ProfileError(f"{bundle}: unreadable plan or device file ({err})") from None
    if not isinstance(plan, dict) or not isinstance(fingerprint, dict) or "record" not in plan:
        raise ProfileError(
            f"{bundle}: {PLAN} or results/{DEVICE} is not what profile-bundle and runner.py "
            "write; copy the whole directory back from the device"
        )
    if fingerprint.get("plan") != plan.get("plan_id"):
        raise ProfileError(f"{bundle}: results belong to another plan than {PLAN}")
    fingerprint = {k: v for k, v in fingerprint.items() if k != "plan"}
    record = {**plan["record"], "name": name, "fingerprint": fingerprint, "created": time.time()}
    source = open_log(bundle / "results")
    log = prepare_profile_dir(out, record)
    have = {(r["key"], r.get("session"), r.get("t")) for r in log.rows}
    new = [r for r in source.rows if (r["key"], r.get("session"), r.get("t")) not in have]
    for row in new:
        log.append(row)
    return len(new)
