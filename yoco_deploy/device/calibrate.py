"""Re-time a predictor's reference model now, so predictions follow today's machine speed."""

from __future__ import annotations

import tempfile
from pathlib import Path

from yoco_deploy import runtime
from yoco_deploy.arch import Arch
from yoco_deploy.device.artifacts import ArtifactBuilder
from yoco_deploy.device.predictor import LatencyPredictor


def build_reference(predictor: LatencyPredictor, folder: Path) -> Path:
    """The predictor's reference model as an ONNX file in ``folder`` (random weights:
    latency depends on shapes), in the format it was profiled in."""
    arch = Arch.from_dict(predictor.reference["arch"])
    return ArtifactBuilder(predictor.search_space, predictor.reference["format"], folder).build(
        arch
    )


def time_reference(predictor: LatencyPredictor, batch: int = 1, seq_len: int = 128) -> float:
    """Median latency (ms) of the predictor's reference model on this machine, today,
    in sessions built exactly as the profile's were."""
    return reference_latency(predictor, batch, seq_len).median_ms


def reference_latency(
    predictor: LatencyPredictor,
    batch: int = 1,
    seq_len: int = 128,
    protocol: runtime.Protocol | None = None,
) -> runtime.Latency:
    """The reference model's runs on this machine now, at this shape (all of them, for a
    percentile)."""
    space = predictor.search_space
    backend = runtime.OrtBackend(runtime.recorded_session(predictor.device))
    with tempfile.TemporaryDirectory(prefix="yoco-calibrate-") as tmp:
        session = backend.load(build_reference(predictor, Path(tmp)))
        feeds = runtime.make_feeds(batch, seq_len, space.dims.vocab_size)
        return runtime.measure(backend, session, feeds, protocol or runtime.Protocol())
