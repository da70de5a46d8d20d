"""Per-device latency predictors: fitted by measurement, stored as plain JSON.

The target is latency *relative to the reference model* timed alongside each
measurement; milliseconds are that ratio times the reference's latency (the profile's,
or re-timed today with calibration), so a predictor fitted yesterday holds today.

Three candidate models are compared by cross-validation on the profile: a non-negative
linear model over the structured features, gradient-boosted trees over the same
features, and a FLOPs-proportional baseline. The file is JSON (never pickle) and carries
its feature schema, space, device, library versions, profile hash and metrics, plus a
content hash so a hand-edited file is refused.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from yoco_deploy.arch import Arch
from yoco_deploy.costs import arch_costs
from yoco_deploy.device.features import FEATURE_SCHEMA_VERSION, FEATURES, feature_vector
from yoco_deploy.errors import YocoError
from yoco_deploy.space import ModelDims, SearchSpace

PREDICTOR_SCHEMA = "yoco-deploy/latency-predictor"
PREDICTOR_SCHEMA_VERSION = 1
CANDIDATES = ("linear", "gbrt", "flops")


class PredictorError(YocoError):
    """A predictor file is unusable (other schema, other space, modified, unreadable)."""


# ---- the candidate models, as JSON-serialisable values -------------------------------------


def _design(archs: list[Arch], shapes: list[tuple[int, int]], dims: ModelDims, kind: str):
    if kind == "flops":
        flops = [
            arch_costs(a, dims, s, b).flops / 1e9 for a, (b, s) in zip(archs, shapes, strict=True)
        ]
        return np.array(flops)[:, None]
    return np.stack(
        [feature_vector(a, dims, b, s) for a, (b, s) in zip(archs, shapes, strict=True)]
    )


def fit_model(kind: str, x: np.ndarray, y: np.ndarray, seed: int = 0) -> dict[str, Any]:
    from sklearn.linear_model import LinearRegression

    if kind in ("linear", "flops"):
        reg = LinearRegression(positive=True, fit_intercept=False).fit(x, y)
        return {"type": kind, "coef": reg.coef_.tolist()}
    if kind == "gbrt":
        from sklearn.ensemble import GradientBoostingRegressor

        reg = GradientBoostingRegressor(
            n_estimators=300, max_depth=3, learning_rate=0.05, subsample=0.8, random_state=seed
        ).fit(x, y)
        trees = []
        for est in reg.estimators_[:, 0]:
            t = est.tree_
            trees.append(
                {
                    "left": t.children_left.tolist(),
                    "right": t.children_right.tolist(),
                    "feature": t.feature.tolist(),
                    "threshold": t.threshold.tolist(),
                    "value": t.value[:, 0, 0].tolist(),
                }
            )
        init = float(reg.init_.predict(x[:1])[0])
        return {"type": "gbrt", "init": init, "learning_rate": reg.learning_rate, "trees": trees}
    raise ValueError(f"unknown model kind {kind!r}")


def _tree_predict(tree: dict, x: np.ndarray) -> np.ndarray:
    left, right = np.asarray(tree["left"]), np.asarray(tree["right"])
    feature, threshold = np.asarray(tree["feature"]), np.asarray(tree["threshold"])
    value = np.asarray(tree["value"])
    node = np.zeros(len(x), dtype=int)
    for _ in range(64):  # depth bound; sklearn leaves have left == -1
        inner = left[node] != -1
        if not inner.any():
            break
        idx = np.nonzero(inner)[0]
        go_left = x[idx, feature[node[idx]]] <= threshold[node[idx]]
        node[idx] = np.where(go_left, left[node[idx]], right[node[idx]])
    return value[node]


def apply_model(model: dict[str, Any], x: np.ndarray) -> np.ndarray:
    if model["type"] in ("linear", "flops"):
        return x @ np.asarray(model["coef"])
    if model["type"] == "gbrt":
        out = np.full(len(x), model["init"])
        for tree in model["trees"]:
            out += model["learning_rate"] * _tree_predict(tree, x)
        return out
    raise PredictorError(f"unknown predictor model type {model['type']!r}")


def predict_rel(
    model: dict[str, Any], archs: list[Arch], shapes: list[tuple[int, int]], dims: ModelDims
) -> np.ndarray:
    """Relative latency (to the reference model) of each (arch, shape), by any model kind:
    a ``prior`` model (``device/prior.py``) is another device's model, scaled, plus a
    linear correction over the features."""
    if model["type"] == "prior":
        base = model["scale"] * predict_rel(model["prior"], archs, shapes, dims)
        correction = _design(archs, shapes, dims, "linear") @ np.asarray(model["coef"])
        # a correction fitted on a few sub-BERTs may overshoot far from them: it may
        # lower the scaled prior, never below a tenth of it (a latency stays positive)
        return np.maximum(base + correction, 0.1 * base)
    return apply_model(model, _design(archs, shapes, dims, model["type"]))


# ---- metrics in deployment terms (nn-Meter, DyNAS-T) ----------------------------------------


def latency_metrics(measured: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    from scipy.stats import kendalltau

    measured, predicted = np.asarray(measured, float), np.asarray(predicted, float)
    rel = (predicted - measured) / measured
    tau = kendalltau(measured, predicted).statistic if len(measured) > 1 else float("nan")
    return {
        "n": len(measured),
        "rmse_ms": float(np.sqrt(np.mean((predicted - measured) ** 2))),
        "mape": float(np.mean(np.abs(rel))),
        "rmspe": float(np.sqrt(np.mean(rel**2))),
        "within5": float(np.mean(np.abs(rel) <= 0.05)),
        "within10": float(np.mean(np.abs(rel) <= 0.10)),
        "kendall_tau": float(tau),
        "mean_signed_error": float(np.mean(rel)),
    }


# ---- the predictor value --------------------------------------------------------------------


@dataclass(frozen=True)
class Prediction:
    latency_ms: float
    low_ms: float
    high_ms: float
    relative: float
    reference_ms: float
    calibrated: bool
    extrapolated: bool

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class LatencyPredictor:
    """Everything needed to predict, and to know what the prediction is about."""

    model: dict[str, Any]
    space: dict[str, Any]
    device: dict[str, Any]
    reference: dict[str, Any]  # arch, median_ms, format
    profile: dict[str, Any]  # path, sha256, rows, shapes
    metrics: dict[str, Any]
    libraries: dict[str, str]
    created: float
    prior: dict[str, Any] | None = None  # path, sha256, device of the predictor it adapts

    @property
    def dims(self) -> ModelDims:
        return ModelDims(**self.space["dims"])

    @property
    def search_space(self) -> SearchSpace:
        return SearchSpace.from_dict(self.space)  # shapes only: first-L layers

    @property
    def rel_error(self) -> float:
        """Cross-validated relative RMS error of the chosen model: the uncertainty band."""
        return float(self.metrics["selection"][self.model["type"]]["rmspe"])

    @property
    def base(self) -> tuple[str, float]:
        """The shape the model counts latency at, in units of the reference model's
        median there (a predictor of one shape: that shape)."""
        refs = self.reference["median_ms"]
        key = self.reference.get("base_shape") or next(iter(refs))
        return key, float(refs[key])

    def reference_at(self, batch: int, seq_len: int) -> float:
        """The reference model's latency at this shape, at the profile's speed: its median
        where the profile timed that shape, else the model's prediction for it."""
        profiled = self.profiled_reference_ms(batch, seq_len)
        if profiled is not None:
            return profiled
        ref = Arch.from_dict(self.reference["arch"])
        units = predict_rel(self.model, [ref], [(batch, seq_len)], self.dims)[0]
        return float(units) * self.base[1]

    def predict_relative(self, archs: list[Arch], batch: int, seq_len: int) -> np.ndarray:
        """Each sub-BERT's latency over the reference model's, at this shape."""
        units = predict_rel(self.model, archs, [(batch, seq_len)] * len(archs), self.dims)
        return units * self.base[1] / self.reference_at(batch, seq_len)

    def predict(
        self, arch: Arch, batch: int = 1, seq_len: int = 128, reference_ms: float | None = None
    ) -> Prediction:
        """``reference_ms``: the reference model timed at this shape today (calibration);
        default: its latency at the profile's speed."""
        self.search_space.validate(arch)
        rel = float(self.predict_relative([arch], batch, seq_len)[0])
        key = f"{batch}x{seq_len}"
        calibrated = reference_ms is not None
        if reference_ms is None:
            reference_ms = self.reference_at(batch, seq_len)
        ms = rel * reference_ms
        band = 2.0 * self.rel_error
        return Prediction(
            latency_ms=ms,
            low_ms=ms * (1 - band),
            high_ms=ms * (1 + band),
            relative=rel,
            reference_ms=float(reference_ms),
            calibrated=calibrated,
            extrapolated=key not in self.profile["shapes"],
        )

    def profiled_reference_ms(self, batch: int, seq_len: int) -> float | None:
        """The reference model's median at this shape over the whole profile (the speed
        every prediction is stated at); None where the profile has no such shape."""
        value = self.reference["median_ms"].get(f"{batch}x{seq_len}")
        return float(value) if value else None

    def check_shape(self, batch: int, seq_len: int) -> None:
        """Refuse a shape outside the profiled range (the smallest to the largest batch
        and sequence length profiled): the model was fitted on none like it, and its
        cross-validated band says nothing there. Between profiled shapes, a prediction
        is made and flagged ``extrapolated``."""
        shapes = [tuple(int(n) for n in s.split("x")) for s in self.profile["shapes"]]
        batches, seqs = sorted(b for b, _ in shapes), sorted(s for _, s in shapes)
        if batches[0] <= batch <= batches[-1] and seqs[0] <= seq_len <= seqs[-1]:
            return
        raise PredictorError(
            f"batch {batch} x seq_len {seq_len} is outside the shapes device "
            f"{self.device['name']!r} was profiled at (batch {_span(batches)}, seq_len "
            f"{_span(seqs)}): a prediction there is a guess; profile that shape too "
            f"(profile --batch {batch} --seq-len {seq_len}) and fit again"
        )

    # ---- storage --------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        body = {
            "schema": PREDICTOR_SCHEMA,
            "schema_version": PREDICTOR_SCHEMA_VERSION,
            "feature_schema_version": FEATURE_SCHEMA_VERSION,
            "features": list(FEATURES) if self.model["type"] != "flops" else ["gflops"],
            "model": self.model,
            "space": self.space,
            "device": self.device,
            "reference": self.reference,
            "profile": self.profile,
            "metrics": self.metrics,
            "libraries": self.libraries,
            "created": self.created,
        }
        if self.prior is not None:  # a predictor fitted without one reads as before priors
            body["prior"] = self.prior
        return {**body, "sha256": _digest(body)}

    def save(self, path: str | Path) -> Path:
        from yoco_deploy.util.atomic import write_text

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        return write_text(path, json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path, space: SearchSpace | None = None) -> LatencyPredictor:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except OSError as err:
            raise PredictorError(f"cannot read predictor {path}: {err.strerror}") from None
        except ValueError as err:
            raise PredictorError(f"{path} is not a predictor file (not JSON: {err})") from None
        if not isinstance(data, dict) or data.get("schema") != PREDICTOR_SCHEMA:
            raise PredictorError(f"{path} is not a yoco-deploy latency predictor")
        if data.get("schema_version") != PREDICTOR_SCHEMA_VERSION:
            raise PredictorError(
                f"{path} has predictor schema {data.get('schema_version')}, this version reads "
                f"{PREDICTOR_SCHEMA_VERSION}: refit it with `yoco-deploy fit`"
            )
        if data.get("feature_schema_version") != FEATURE_SCHEMA_VERSION:
            raise PredictorError(
                f"{path} uses feature schema {data.get('feature_schema_version')}, this "
                f"version computes schema {FEATURE_SCHEMA_VERSION}: refit it with "
                "`yoco-deploy fit --profile ...`"
            )
        stored = data.pop("sha256", None)
        if stored != _digest({k: v for k, v in data.items()}):
            raise PredictorError(
                f"{path} was modified after fitting (content hash mismatch); refit it with "
                "`yoco-deploy fit` instead of editing it"
            )
        fields = {k: data[k] for k in cls.__dataclass_fields__ if k in data or k != "prior"}
        predictor = cls(**fields)
        if space is not None and not space.same_shapes(predictor.space):
            raise PredictorError(
                f"{path} was fitted for another search space ({_space_line(predictor.space)}) "
                f"than this one ({_space_line(space.shape_dict())})"
            )
        return predictor


def _span(values: list[int]) -> str:
    return f"{values[0]}" if values[0] == values[-1] else f"{values[0]} to {values[-1]}"


def _digest(body: dict[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _space_line(space: dict[str, Any]) -> str:
    d = space["dims"]
    return (
        f"{d['num_layers']}x{d['hidden']}: depth {space['depth']}, heads {space['heads']}, "
        f"ffn {space['ffn']}"
    )


# ---- fitting --------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingData:
    archs: list[Arch]
    shapes: list[tuple[int, int]]
    # measured latency over the reference's beside it, in units of the reference at the
    # profile's base shape (profile_store.load_training_data); ref_ms likewise
    rel: np.ndarray
    ms: np.ndarray
    ref_ms: np.ndarray


def cross_validate(kind: str, data: TrainingData, dims: ModelDims, folds: int = 5, seed: int = 0):
    """Out-of-fold predictions of relative latency for one candidate model."""
    x = _design(data.archs, data.shapes, dims, kind)
    y = data.rel
    order = np.random.default_rng(seed).permutation(len(y))
    out = np.empty(len(y))
    for k in range(folds):
        test = order[k::folds]
        train = np.setdiff1d(order, test)
        out[test] = apply_model(fit_model(kind, x[train], y[train], seed), x[test])
    return out


def select_and_fit(
    data: TrainingData, dims: ModelDims, seed: int = 0
) -> tuple[dict[str, Any], dict[str, dict[str, float]]]:
    """Cross-validate every candidate, keep the lowest MAPE, refit it on all the data."""
    if len(data.rel) < 10:
        raise PredictorError(f"only {len(data.rel)} measurements: profile at least 10 sub-BERTs")
    selection = {}
    for kind in CANDIDATES:
        pred_rel = cross_validate(kind, data, dims, seed=seed)
        selection[kind] = latency_metrics(data.ms, pred_rel * data.ref_ms)
    best = min(CANDIDATES, key=lambda k: selection[k]["mape"])
    model = fit_model(best, _design(data.archs, data.shapes, dims, best), data.rel, seed)
    return model, selection


def now() -> float:
    return round(time.time(), 3)
