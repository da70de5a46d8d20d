import json

import numpy as np
import pytest
from transformers import BertConfig

from yoco_deploy.device.features import FEATURES, feature_vector
from yoco_deploy.device.predictor import (
    LatencyPredictor,
    PredictorError,
    TrainingData,
    apply_model,
    fit_model,
    latency_metrics,
    select_and_fit,
)
from yoco_deploy.space import SearchSpace

from helpers import BASE, TINY, make_predictor, synthetic


def test_features_are_versioned_and_sized():
    arch = BASE.max_arch()
    v = feature_vector(arch, BASE.dims, 1, 128)
    assert v.shape == (len(FEATURES),) and (v >= 0).all()
    bigger = feature_vector(arch, BASE.dims, 8, 128)
    assert bigger[FEATURES.index("ffn_macs")] == 8 * v[FEATURES.index("ffn_macs")]


def test_linear_model_recovers_an_additive_latency():
    data = synthetic(BASE, 80, 0)
    model, selection = select_and_fit(data, BASE.dims)
    assert model["type"] == "linear"
    assert selection["linear"]["mape"] < 1e-6 and selection["linear"]["within5"] == 1.0
    assert selection["flops"]["mape"] > selection["linear"]["mape"]


def test_gbrt_json_equals_sklearn():
    from sklearn.ensemble import GradientBoostingRegressor

    rng = np.random.default_rng(0)
    x, y = rng.random((60, 4)), rng.random(60)
    model = fit_model("gbrt", x, y, seed=3)
    ref = GradientBoostingRegressor(
        n_estimators=300, max_depth=3, learning_rate=0.05, subsample=0.8, random_state=3
    ).fit(x, y)
    assert np.allclose(apply_model(json.loads(json.dumps(model)), x), ref.predict(x))


def test_metrics_in_deployment_terms():
    m = latency_metrics(np.array([10.0, 20, 30, 40]), np.array([10.4, 21, 36, 40]))
    assert m["within5"] == 0.75 and m["within10"] == 0.75 and m["kendall_tau"] == 1.0
    assert m["mape"] == pytest.approx((0.04 + 0.05 + 0.2 + 0) / 4)
    assert m["mean_signed_error"] > 0


def test_predictor_round_trip_and_prediction(tmp_path):
    p, path = make_predictor(BASE, tmp_path)
    loaded = LatencyPredictor.load(path, BASE)
    arch = BASE.sampler(5).sample()
    a, b = p.predict(arch), loaded.predict(arch)
    assert a == b and a.low_ms < a.latency_ms < a.high_ms and not a.calibrated
    calibrated = loaded.predict(arch, reference_ms=20.0)
    assert calibrated.latency_ms == pytest.approx(2 * a.latency_ms) and calibrated.calibrated
    assert loaded.predict(arch, batch=8).extrapolated


def test_hand_edited_predictor_is_refused(tmp_path):
    _, path = make_predictor(BASE, tmp_path)
    data = json.loads(path.read_text())
    data["model"]["coef"] = [c + 0.1 for c in data["model"]["coef"]]
    path.write_text(json.dumps(data))
    before = path.read_bytes()
    with pytest.raises(PredictorError, match="modified after fitting"):
        LatencyPredictor.load(path)
    assert path.read_bytes() == before


def test_other_schema_or_space_is_refused(tmp_path):
    _, path = make_predictor(BASE, tmp_path)
    tiny = SearchSpace.from_config(BertConfig(**TINY))
    with pytest.raises(PredictorError, match="another search space"):
        LatencyPredictor.load(path, tiny)
    data = json.loads(path.read_text())
    data["feature_schema_version"] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(PredictorError, match="feature schema 99"):
        LatencyPredictor.load(path)
    path.write_text("not json")
    with pytest.raises(PredictorError, match="not a predictor file"):
        LatencyPredictor.load(path)


def test_heldout_metrics_are_relative_to_the_reference_timed_beside():
    """A machine that drifts between rows moves each sub-BERT's median and its paired
    reference together: the relative metrics see the predictor's error only, the ms ones
    also see the drift between unpaired medians."""
    from yoco_deploy.device.fit import evaluate

    data = synthetic(BASE, 40, 2)
    model, _ = select_and_fit(data, BASE.dims)
    test = synthetic(BASE, 30, 3)
    drift = np.random.default_rng(4).uniform(0.8, 1.3, 30)
    # each sub-BERT's unpaired median drifts 4% more than the reference beside it did
    ref_ms = test.ref_ms * drift
    ms = test.rel * ref_ms * np.where(np.arange(30) % 2, 1.04, 0.96)
    drifting = TrainingData(test.archs, test.shapes, test.rel, ms, ref_ms)
    metrics, pred_ms = evaluate(model, drifting, BASE.dims)
    assert metrics["within5"] == 1.0 and metrics["mape"] < 1e-6
    assert metrics["kendall_tau"] == pytest.approx(1.0)
    assert "rmse_ms" not in metrics  # a ratio has no milliseconds
    assert metrics["ms"]["mape"] == pytest.approx(0.04, abs=2e-3)
    assert np.allclose(pred_ms, test.rel * ref_ms)
