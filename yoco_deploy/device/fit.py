"""Fit a device's latency predictor from its profile, evaluate it, draw it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from yoco_deploy.arch import Arch
from yoco_deploy.device.predictor import (
    CANDIDATES,
    LatencyPredictor,
    TrainingData,
    _design,
    fit_model,
    latency_metrics,
    now,
    predict_rel,
    select_and_fit,
)
from yoco_deploy.device.profile_store import (
    MEASUREMENTS,
    ProfileError,
    base_shape,
    load_training_data,
    profile_digest,
    read_device,
    reference_median,
    shape_key,
)
from yoco_deploy.space import ModelDims
from yoco_deploy.util.versions import library_versions


def _subset(data: TrainingData, idx: np.ndarray) -> TrainingData:
    return TrainingData(
        archs=[data.archs[i] for i in idx],
        shapes=[data.shapes[i] for i in idx],
        rel=data.rel[idx],
        ms=data.ms[idx],
        ref_ms=data.ref_ms[idx],
    )


def evaluate(model: dict, data: TrainingData, dims: ModelDims) -> tuple[dict, np.ndarray]:
    """Metrics of the predicted latency relative to the full model, against the ratio
    measured pairwise beside it (each run of a sub-BERT followed by one of the reference):
    the predictor's own error, free of the machine's drift. Under ``"ms"``, the same
    predictions in milliseconds (each scaled by the reference timed beside that row, what
    `predict --calibrate` does on the day) against the sub-BERT's own median: these also
    carry the drift between unpaired medians. Returns the predictions in ms for the plot."""
    pred_rel = predict_rel(model, data.archs, data.shapes, dims)
    pred_ms = pred_rel * data.ref_ms
    metrics = latency_metrics(data.rel, pred_rel)
    del metrics["rmse_ms"]  # a ratio has no milliseconds
    return {**metrics, "ms": latency_metrics(data.ms, pred_ms)}, pred_ms


# a latency above this is a unit slip, a broken clock or an edit, not a timing (16 minutes)
MAX_LATENCY_MS = 1e6


def latency_problem(value: float, most: float = MAX_LATENCY_MS) -> str | None:
    """Why a parsed latency (or ratio of two) cannot come from a timing, or None."""
    if not math.isfinite(value):
        return "not a finite number"
    if value <= 0:
        return "not above zero"
    if value > most:
        return f"above {most:g} ms"
    return None


def check_latencies(profile: Path, data: TrainingData) -> None:
    """Every latency fit learns from, as read: the sub-BERT's median, the reference timed
    beside it and their ratio must be positive, finite and plausible; the first that is
    not is named by file and row (its key, ARCH_ID@BATCHxSEQ)."""
    for i, (arch, (batch, seq)) in enumerate(zip(data.archs, data.shapes, strict=True)):
        values = {"median_ms": data.ms[i], "ref_ms": data.ref_ms[i], "rel": data.rel[i]}
        for name, value in values.items():
            problem = latency_problem(float(value), math.inf if name == "rel" else MAX_LATENCY_MS)
            if problem:
                _refuse(profile, f"row {arch.arch_id}@{batch}x{seq}", name, value, problem)


def check_reference_medians(profile: Path, medians: dict[str, float]) -> None:
    """The reference model's median per shape, which turns ratios into milliseconds."""
    for shape, value in medians.items():
        problem = latency_problem(value)
        if problem:
            _refuse(profile, f"the reference rows at {shape}", "median_ms", value, problem)


def _refuse(profile: Path, where: str, name: str, value: float, problem: str) -> None:
    raise ProfileError(
        f"{Path(profile) / MEASUREMENTS}: {where} has {name} {float(value):g}, {problem}, "
        "which no timing gives: profile the device again (another --device name, or move "
        "this measurements.jsonl away)"
    )


@dataclass(frozen=True)
class FitResult:
    predictor: LatencyPredictor
    path: Path
    plot: Path | None
    table: list[dict[str, Any]]


def fit_profile(
    profile: Path,
    out: Path,
    test_profile: Path | None = None,
    holdout: float = 0.2,
    seed: int = 0,
    plot: bool = True,
    prior: Path | None = None,
) -> FitResult:
    """Choose a model by cross-validation, report it on held-out sub-BERTs (and on a
    separately measured test profile), then refit on everything and save. ``prior``:
    another device's predictor to adapt (``device/prior.py``), from as few as 5 rows."""
    device = read_device(profile)
    data, dims = load_training_data(profile)
    check_latencies(profile, data)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(data.rel))
    n_hold = round(holdout * len(order)) if test_profile is None else 0
    train, held = _subset(data, order[n_hold:]), _subset(data, order[:n_hold])
    prior_record = None
    if prior is not None:
        from yoco_deploy.device.prior import load_prior, select_with_prior
        from yoco_deploy.space import SearchSpace

        prior_predictor, prior_record = load_prior(prior, SearchSpace.from_dict(device["space"]))
        model, selection = select_with_prior(train, dims, prior_predictor.model, seed)
    else:
        model, selection = select_and_fit(train, dims, seed)
    references = reference_median(profile)
    check_reference_medians(profile, references)
    reference = Arch.from_dict(device["reference"]["arch"])
    metrics: dict[str, Any] = {"selection": selection, "chosen": model["type"]}
    if prior is None:
        model, by_shape = _across_shapes(model, train, dims, references, reference, seed)
        if by_shape:
            metrics |= {"chosen": model["type"], "chosen_by": "unseen shapes",
                        "selection_unseen_shapes": by_shape}  # fmt: skip
    evals: dict[str, tuple[TrainingData, dict]] = {}
    if n_hold:
        evals["holdout"] = (held, model)
    if test_profile is not None:
        test_data, test_dims = load_training_data(test_profile)
        check_latencies(test_profile, test_data)
        if test_dims != dims or _space_of(test_profile) != _space_of(profile):
            raise ProfileError(
                f"{test_profile} profiles another search space or model than {profile}; "
                "test a predictor on sub-BERTs of its own space"
            )
        evals["test"] = (test_data, model)
    table = []
    points = {}
    for split, (split_data, m) in evals.items():
        chosen, pred = evaluate(m, split_data, dims)
        flops_model = fit_model(
            "flops", _design(train.archs, train.shapes, dims, "flops"), train.rel
        )
        baseline, _ = evaluate(flops_model, split_data, dims)
        metrics[split] = {model["type"]: chosen, "flops_baseline": baseline}
        table += [
            {"split": split, "model": model["type"], **chosen},
            {"split": split, "model": "flops_baseline", **baseline},
        ]
        points[split] = (split_data.ms, pred)
    if n_hold:  # the shipped model uses every measurement
        model = _refit(model, data, dims, seed)
    by_shape = metrics.get("selection_unseen_shapes", {})
    if not n_hold and model["type"] in by_shape:  # the same fit on the same data: reuse it
        metrics["unseen_shapes"] = by_shape[model["type"]]
    else:
        metrics["unseen_shapes"] = unseen_shapes(model, data, dims, references, reference, seed)
    predictor = LatencyPredictor(
        model=model,
        space=device["space"],
        device={"name": device["name"], **device["fingerprint"], "format": device["format"]},
        reference={
            **device["reference"],
            "median_ms": references,
            "base_shape": base_shape(references),
            "format": device["format"],
        },
        profile={
            "path": str(profile),
            "sha256": profile_digest(profile),
            "rows": len(data.rel),
            "shapes": sorted({f"{b}x{s}" for b, s in data.shapes}),
            "test_profile": str(test_profile) if test_profile else None,
        },
        metrics=metrics,
        libraries=library_versions("onnxruntime", "scikit-learn", "numpy"),
        created=now(),
        prior=prior_record,
    )
    path = predictor.save(out)
    png = draw(points, path.with_suffix(".png"), device["name"], model["type"]) if plot else None
    return FitResult(predictor, path, png, table)


def unseen_shapes(
    model: dict,
    data: TrainingData,
    dims: ModelDims,
    medians: dict[str, float],
    reference: Arch,
    seed: int = 0,
) -> dict[str, Any]:
    """How the predictor answers for a shape it was not profiled at: each profiled shape
    that lies between others (``_between``) is left out in turn, the chosen model's kind
    fitted on the other shapes, and scored on it (each sub-BERT's latency over the
    reference's at that shape, the reference's predicted too, against the ratio measured
    beside it)."""
    shapes = sorted(set(data.shapes))
    base = medians[base_shape(medians)]
    measured, predicted, held = [], [], []
    for shape in shapes:
        if not _between(shape, [s for s in shapes if s != shape]):
            continue
        rows = np.array([s == shape for s in data.shapes])
        fitted = _refit(model, _subset(data, np.nonzero(~rows)[0]), dims, seed)
        test = _subset(data, np.nonzero(rows)[0])
        ref_units = predict_rel(fitted, [reference], [shape], dims)[0]
        predicted += list(predict_rel(fitted, test.archs, test.shapes, dims) / ref_units)
        measured += list(test.rel * base / medians[shape_key(*shape)])
        held.append(shape_key(*shape))
    if not held:
        return {"shapes": [], "note": "no profiled shape lies between two others (profile 3 "
                "batches or 3 sequence lengths to measure this)"}  # fmt: skip
    metrics = latency_metrics(np.array(measured), np.array(predicted))
    del metrics["rmse_ms"]
    return {"shapes": held, **metrics}


def _across_shapes(model, data, dims, medians, reference, seed):
    """With shapes between others profiled, the candidate that answers best where it was
    not profiled (each such shape left out in turn): random folds mix every shape into
    training and favour trees, which cannot interpolate across shapes (on a MiniLM grid
    they chose trees at 62% within +-10% at unseen shapes, where the linear model had
    100%). Returns (model, each candidate's unseen-shape metrics) or (model, {})."""
    scores = {}
    for kind in CANDIDATES:
        got = unseen_shapes({"type": kind}, data, dims, medians, reference, seed)
        if got.get("shapes"):
            scores[kind] = got
    if not scores:
        return model, {}
    best = min(scores, key=lambda k: scores[k]["mape"])
    return fit_model(best, _design(data.archs, data.shapes, dims, best), data.rel, seed), scores


def _between(shape: tuple[int, int], others: list[tuple[int, int]]) -> bool:
    """Whether other shapes hold this one's sequence length with a smaller and a larger
    batch, or its batch with a shorter and a longer sequence (interpolation, not a guess
    past a corner of the grid)."""
    for axis in (0, 1):
        line = [o[axis] for o in others if o[1 - axis] == shape[1 - axis]]
        if line and min(line) < shape[axis] < max(line):
            return True
    return False


def _refit(model: dict, data: TrainingData, dims: ModelDims, seed: int) -> dict:
    """The chosen model's kind, fitted again on ``data``."""
    if model["type"] == "prior":
        from yoco_deploy.device.prior import fit_prior_model

        return fit_prior_model(model["prior"], data, dims, model["ridge"])
    return fit_model(model["type"], _design(data.archs, data.shapes, dims, model["type"]),
                     data.rel, seed)  # fmt: skip


def draw(points: dict, path: Path, name: str, kind: str) -> Path | None:
    if not points:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5))
    lo = min(float(np.min(m)) for m, _ in points.values()) * 0.9
    hi = max(float(np.max(m)) for m, _ in points.values()) * 1.1
    grid = np.array([lo, hi])
    ax.plot(grid, grid, "k-", lw=1, label="exact")
    ax.fill_between(grid, grid * 0.9, grid * 1.1, color="0.9", label="±10%")
    for split, (measured, predicted) in points.items():
        ax.scatter(measured, predicted, s=14, label=f"{split} ({len(measured)})")
    ax.set_xlabel("measured latency (ms)")
    ax.set_ylabel("predicted latency (ms)")
    ax.set_title(f"{name}: {kind} predictor")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _space_of(profile: Path) -> dict:
    return read_device(profile)["space"]
