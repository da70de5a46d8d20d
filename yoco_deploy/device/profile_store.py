"""A profile directory: ``device.json`` (the device fingerprint and what was profiled:
space, export format, shapes, reference model) and ``measurements.jsonl`` (append-only,
written by :mod:`yoco_deploy.runtime.runner`); how one is created, checked and read back."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from yoco_deploy import runtime
from yoco_deploy.arch import Arch
from yoco_deploy.errors import YocoError
from yoco_deploy.space import ModelDims, SearchSpace
from yoco_deploy.util.atomic import write_text

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
    session: runtime.SessionSpec = field(default_factory=lambda: runtime.SessionSpec(threads=2))
    fmt: str = "int8"
    seed: int = 0
    protocol: runtime.Protocol = field(default_factory=runtime.Protocol)

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
    was, now = runtime.recorded_session(old), runtime.recorded_session(new)
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
    problem = _device_problem(data)
    if problem:
        raise ProfileError(
            f"{file} is damaged ({problem}); restore it from the bundle or a backup, or "
            "profile the device again into a new folder"
        )
    return data


_DEVICE_FIELDS = {"name": str, "fingerprint": dict, "format": str, "reference": dict}


def _device_problem(data: dict[str, Any]) -> str | None:
    for key, kind in _DEVICE_FIELDS.items():
        if not isinstance(data.get(key), kind):
            return f"{key} is {data.get(key)!r}, not a {kind.__name__}"
    try:
        SearchSpace.from_dict(data["space"])
        ModelDims(**data["space"]["dims"])
    except (YocoError, TypeError, KeyError, ValueError, AttributeError) as err:
        return f"space is not a search space: {err}"
    return None


# ---- the rows of measurements.jsonl -------------------------------------------------------

_ROW_NUMBERS = {"model": ("median_ms", "ref_ms", "rel"), "reference": ("median_ms",)}


def row_problem(row: dict[str, Any]) -> str | None:
    """Why a measurements row cannot be used, or None: the one check of a row's contents
    (kind, key, shapes, latencies, arch) that every reader of a profile and --repair
    apply; further checks of a row's values belong here."""
    why = runtime.measurement_problem(row)
    if why:
        return why
    for name in ("batch", "seq_len"):
        value = row.get(name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            return f"has {name} {value!r}, not a positive whole number"
    for name in _ROW_NUMBERS[row["kind"]]:
        value = row.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"has {name} {value!r}, not a number"
        if not math.isfinite(value):
            return f"has {name} {value!r}, not a finite number"
    return _model_row_problem(row) if row["kind"] == "model" else None


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _model_row_problem(row: dict[str, Any]) -> str | None:
    try:
        arch = Arch.from_dict(row.get("arch"))
    except (YocoError, TypeError, KeyError, ValueError, AttributeError):
        return f"has no valid arch ({_shown(row.get('arch'))})"
    if row.get("arch_id") != arch.arch_id:
        return f"has arch_id {row.get('arch_id')!r}, not its arch's {arch.arch_id}"
    if row["key"] != runtime.job_key(arch.arch_id, row["batch"], row["seq_len"]):
        return f"has key {row['key']!r}, not its arch_id@{row['batch']}x{row['seq_len']}"
    return None


def open_log(
    path: Path, repair: bool = False, check: runtime.RowCheck = row_problem
) -> runtime.MeasurementLog:
    """The profile's measurements, every row checked (``repair``: unusable rows set aside
    first, listed in the log's ``set_aside``)."""
    try:
        return runtime.MeasurementLog(Path(path) / MEASUREMENTS, repair, check)
    except runtime.RunnerError as err:
        raise ProfileError(str(err)) from None


def repair_log(path: Path) -> list[str]:
    """Set a profile's unusable rows aside (see ``open_log``); what was set aside."""
    return open_log(path, repair=True).set_aside


def prepare_profile_dir(
    path: Path, record: dict[str, Any], repair: bool = False
) -> runtime.MeasurementLog:
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ProfileError(f"cannot create profile directory {path}: {err.strerror}") from None
    existing = read_device(path) if (path / DEVICE).exists() else None
    if existing is not None:
        check_compatible(path, existing, record)
    log = open_log(path, repair)  # fails on a corrupt file before anything is written
    if existing is None:
        write_text(path / DEVICE, json.dumps(record, indent=2) + "\n")
    elif not {tuple(s) for s in record["shapes"]} <= {tuple(s) for s in existing.get("shapes", [])}:
        # extended to more shapes: the record lists every shape the profile holds
        shapes = sorted({tuple(s) for s in existing.get("shapes", []) + record["shapes"]})
        grown = {**existing, "shapes": [list(s) for s in shapes]}
        write_text(path / DEVICE, json.dumps(grown, indent=2) + "\n")
    return log


def plan_jobs(archs: list[Arch], shapes, seed: int) -> list[runtime.Job]:
    """Every (arch, shape), in a seeded shuffled order: size is not confounded with time."""
    jobs = [runtime.Job(a.arch_id, b, s, a.to_dict()) for a in archs for b, s in shapes]
    order = np.random.default_rng(seed).permutation(len(jobs))
    return [jobs[i] for i in order]


# ---- reading a profile --------------------------------------------------------------------


def load_training_data(path: Path, space: SearchSpace | None = None):
    from yoco_deploy.device.predictor import TrainingData

    device = read_device(path)
    dims = ModelDims(**device["space"]["dims"])
    if space is not None and not space.same_shapes(device["space"]):
        raise ProfileError(f"{path} was profiled for another search space")
    profile_space = SearchSpace.from_dict(device["space"])
    rows = list(open_log(path).latest().values())
    if not rows:
        raise ProfileError(f"{path} has no measurements yet: run `yoco-deploy profile` first")
    archs = []
    for row in rows:
        arch = Arch.from_dict(row["arch"])  # checked by row_problem as the log was read
        if not profile_space.contains(arch):
            raise ProfileError(f"{path}: row {row['key']} is outside the profile's space")
        archs.append(arch)
    shapes = [(r["batch"], r["seq_len"]) for r in rows]
    # one unit for every shape: the reference model at the base shape, so that one model
    # answers for shapes between the profiled ones (a single shape: the ratios as timed)
    medians = reference_median(path)
    to_base = np.ones(len(shapes))
    if len(medians) > 1 and all(math.isfinite(v) and v > 0 for v in medians.values()):
        base = medians[base_shape(medians)]  # a broken median is refused by fit's checks
        to_base = np.array([medians[shape_key(b, s)] / base for b, s in shapes])
    return TrainingData(
        archs=archs,
        shapes=shapes,
        rel=np.array([r["rel"] for r in rows]) * to_base,
        ms=np.array([r["median_ms"] for r in rows]),
        ref_ms=np.array([r["ref_ms"] for r in rows]) / to_base,
    ), dims


def profiled_arch_ids(path: Path) -> set[str]:
    return {row["arch_id"] for row in open_log(path).latest().values()}


def profile_digest(path: Path) -> str:
    import hashlib

    from yoco_deploy.util.hashing import update_with_file

    h = hashlib.sha256()
    for name in (DEVICE, MEASUREMENTS):
        file = Path(path) / name
        if file.exists():
            update_with_file(h, file)
    return h.hexdigest()


def reference_median(path: Path) -> dict[str, float]:
    """Median reference latency per shape over the whole profile."""
    rows = [r for r in open_log(path).rows if r["kind"] == "reference"]
    by_shape: dict[str, list[float]] = {}
    for r in rows:
        by_shape.setdefault(shape_key(r["batch"], r["seq_len"]), []).append(r["median_ms"])
    return {k: float(np.median(v)) for k, v in sorted(by_shape.items(), key=_shape_order)}


def shape_key(batch: int, seq_len: int) -> str:
    return f"{batch}x{seq_len}"


def _shape_order(item: tuple[str, object]) -> tuple[int, int]:
    batch, seq = item[0].split("x")
    return int(batch), int(seq)


def base_shape(medians: dict[str, float]) -> str:
    """The shape a multi-shape profile's latencies are counted in units of (the reference
    model's median there): the smallest batch, then the shortest sequence."""
    return min(medians.items(), key=_shape_order)[0]
