"""A new device's latency predictor from few measurements, with another device's predictor
as its prior (HELP's idea, for BERT encoders): the prior's relative latency, scaled to
the new device, plus a linear correction over the latency features shrunk toward zero
(ridge). How far the measurements may move it (the shrinkage, or none: the prior only
scaled, or the prior as it is) is chosen by cross-validation on the new measurements,
against the models fitted without a prior when there are enough measurements for them.

Every fit is weighted to relative error (each row divided by its latency), the error a
budget decision feels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from yoco_deploy.device.predictor import (
    CANDIDATES,
    LatencyPredictor,
    PredictorError,
    TrainingData,
    _design,
    cross_validate,
    fit_model,
    latency_metrics,
    predict_rel,
)
from yoco_deploy.space import ModelDims, SearchSpace

MIN_WITH_PRIOR = 5  # scale and a shrunk correction: fewer rows leave the choice to chance
MIN_WITHOUT_PRIOR = 10  # the models fitted from scratch (select_and_fit's own floor)
# the correction's shrinkage, strongest first (ties go to the stronger); 0: the prior
# only scaled, "as-is": the prior unchanged
RIDGE = (1e3, 1e2, 1e1, 1.0, 1e-1, 1e-2)


def load_prior(path: Path, space: SearchSpace) -> tuple[LatencyPredictor, dict[str, Any]]:
    """The prior predictor (same space, same feature schema: ``LatencyPredictor.load``
    refuses others) and how a predictor adapted from it records it."""
    from yoco_deploy.util.hashing import file_sha256

    prior = LatencyPredictor.load(path, space)
    record = {"path": str(path), "sha256": file_sha256(Path(path)),
              "device": prior.device.get("name"), "cpu": prior.device.get("cpu")}  # fmt: skip
    return prior, record


def fit_prior_model(
    prior_model: dict[str, Any], data: TrainingData, dims: ModelDims, ridge: float | str
) -> dict[str, Any]:
    """``ridge``: the correction's shrinkage (0: none fitted, the prior scaled), or "as-is"."""
    base = predict_rel(prior_model, data.archs, data.shapes, dims)
    x = _design(data.archs, data.shapes, dims, "linear")
    coef = np.zeros(x.shape[1])
    if ridge == "as-is":
        scale = 1.0
    elif ridge == 0:
        w = 1.0 / data.rel  # relative error: each row weighed by its own latency
        scale = float(np.sum(w * w * base * data.rel) / np.sum(w * w * base * base))
    else:
        scale, coef = _ridge(base, x, data.rel, float(ridge))
    return {"type": "prior", "prior": prior_model, "scale": scale, "coef": coef.tolist(),
            "ridge": ridge}  # fmt: skip


def _ridge(base: np.ndarray, x: np.ndarray, y: np.ndarray, lam: float):
    """min sum((y - s*base - x@d) / y)^2 + lam * |d * rms(x)|^2 over s (free) and d."""
    norm = np.sqrt(np.mean(x * x, axis=0))
    norm[norm == 0] = 1.0
    a = np.column_stack([base, x / norm]) / y[:, None]
    penalty = lam * len(y) * np.eye(a.shape[1])
    penalty[0, 0] = 0.0  # the scale is free; the correction is shrunk
    theta = np.linalg.solve(a.T @ a + penalty, a.T @ np.ones(len(y)))
    return float(theta[0]), theta[1:] / norm


def _cross_validate_prior(prior_model, data: TrainingData, dims, ridge, folds=5, seed=0):
    """Out-of-fold relative latencies, with the folds of ``predictor.cross_validate``."""
    n = len(data.rel)
    order = np.random.default_rng(seed).permutation(n)
    out = np.empty(n)
    for k in range(min(folds, n)):
        test = order[k::folds]
        train = np.setdiff1d(order, test)
        model = fit_prior_model(prior_model, _rows(data, train), dims, ridge)
        part = _rows(data, test)
        out[test] = predict_rel(model, part.archs, part.shapes, dims)
    return out


def _rows(data: TrainingData, idx: np.ndarray) -> TrainingData:
    return TrainingData([data.archs[i] for i in idx], [data.shapes[i] for i in idx],
                        data.rel[idx], data.ms[idx], data.ref_ms[idx])  # fmt: skip


def _name(ridge: float | str) -> str:
    if ridge == "as-is":
        return "prior as-is"
    return "prior scaled" if ridge == 0 else f"prior + ridge {ridge:g}"


def select_with_prior(
    data: TrainingData, dims: ModelDims, prior_model: dict[str, Any], seed: int = 0
) -> tuple[dict[str, Any], dict[str, dict[str, float]]]:
    """Cross-validate the prior's variants (and, from 10 measurements, the models fitted
    without it), keep the lowest MAPE, refit it on every measurement. The selection is
    keyed by model name; the chosen one also under its type ``prior`` (or its own)."""
    n = len(data.rel)
    if n < MIN_WITH_PRIOR:
        raise PredictorError(
            f"only {n} measurements: a predictor adapted from a prior needs at least "
            f"{MIN_WITH_PRIOR} (profile --n {MIN_WITH_PRIOR})"
        )
    selection: dict[str, dict[str, float]] = {}
    fits: dict[str, Any] = {}
    for ridge in ("as-is", 0, *RIDGE):
        pred = _cross_validate_prior(prior_model, data, dims, ridge, seed=seed)
        selection[_name(ridge)] = latency_metrics(data.ms, pred * data.ref_ms)
        fits[_name(ridge)] = ridge
    if n >= MIN_WITHOUT_PRIOR:
        for kind in CANDIDATES:
            pred = cross_validate(kind, data, dims, seed=seed)
            selection[kind] = latency_metrics(data.ms, pred * data.ref_ms)
            fits[kind] = kind
    best = min(selection, key=lambda k: (round(selection[k]["mape"], 4), list(selection).index(k)))
    if best in CANDIDATES:
        model = fit_model(best, _design(data.archs, data.shapes, dims, best), data.rel, seed)
    else:
        model = fit_prior_model(prior_model, data, dims, fits[best])
        selection["prior"] = {**selection[best], "variant": best}
    return model, selection
