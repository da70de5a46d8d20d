"""The bundle manifest's reader and writer: what one writes the other reads back."""

import json

import pytest

from yoco_deploy.manifest import BundleManifest, ManifestError, MeasuredLatency


def _written() -> dict:
    """A manifest as ship writes it (the keys and their order)."""
    return {
        "schema": 1,
        "target": "dev:latency=50%",
        "arch": {"layers": [{"heads": 2, "ffn": 64}]},
        "arch_id": "abc",
        "params": 10,
        "params_non_embedding": 4,
        "flops": 100,
        "budgets": {"latency_share": 0.5, "latency": 1.5},
        "budget_ms": 1.5,
        "predicted_latency_ms": 1.2,
        "measured_latency_ms": {"median": 1.3, "p90": 1.4, "cv": 0.02, "runs": 20},
        "device": "dev",
        "machine": {"cpu": "x"},
        "session": {"provider": "cpu", "threads": 2},
        "seq_len": 16,
        "batch": 1,
        "format": "int8",
        "metric": {"name": "accuracy", "value": 0.9},
        "validation": {},
        "int8": None,
        "onnx_sha256": "0" * 64,
        "size_mb": 1.0,
        "libraries": {"onnxruntime": "1"},
        "created": 0.0,
        "name": "dev@1.3ms",
        "labels": ["neg", "pos"],
        "base_model": None,
        "source_layers": [0],
        "data": {"task": "sst2"},
        "timing": {"calibrated_prediction_ms": 1.25},
        "quality": {"passed": True},
    }


def test_written_keys_and_order_round_trip(tmp_path):
    m = BundleManifest.from_dict(_written())
    assert m.measured_latency_ms == MeasuredLatency(1.3, 1.4, 0.02, 20)
    assert m.predicted_ms == 1.25 and m.task == "sst2"
    assert list(m.to_dict()) == list(_written())  # the JSON keeps its key order
    m.write(tmp_path)
    assert json.loads((tmp_path / "manifest.json").read_text()) == _written()
    assert BundleManifest.read(tmp_path) == m


def test_keys_from_a_newer_writer_are_kept_and_old_bundles_read():
    newer = {**_written(), "added_later": {"x": 1}}
    m = BundleManifest.from_dict(newer)
    assert m.extra == {"added_later": {"x": 1}} and m.to_dict() == newer
    old = {k: v for k, v in _written().items() if k not in ("session", "timing", "quality")}
    old |= {"provider": "CPUExecutionProvider", "threads": 2}  # before the session record
    old["labels"] = None  # an older ship wrote null
    m = BundleManifest.from_dict(old)
    assert m.session is None and m.timing == {} and m.labels == []
    assert (m.provider, m.threads) == ("CPUExecutionProvider", 2)
    assert m.to_dict()["provider"] == "CPUExecutionProvider"  # kept where nothing replaces it
    assert m.predicted_ms == 1.2  # no calibration recorded: the raw prediction


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([1, 2], "is not a bundle manifest"),
        ({k: v for k, v in _written().items() if k != "seq_len"}, "it has no seq_len"),
        ({**_written(), "measured_latency_ms": 3.0}, "measured_latency_ms is not"),
    ],
)
def test_what_is_not_a_manifest_is_named(tmp_path, body, message):
    (tmp_path / "manifest.json").write_text(json.dumps(body))
    with pytest.raises(ManifestError, match=message):
        BundleManifest.read(tmp_path)


def test_an_unreadable_manifest_is_one_clear_error(tmp_path):
    with pytest.raises(ManifestError, match=r"has no manifest\.json"):
        BundleManifest.read(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match="cannot be read as JSON"):
        BundleManifest.read(tmp_path)
