"""Re-time a predictor's reference model now, so predictions follow today's machine speed."""

from __future__ import annotations

import tempfile
from pathlib import Path

from yoco_deploy import runner
from yoco_deploy.arch import Arch
from yoco_deploy.predictor import LatencyPredictor
from yoco_deploy.profiling import ArtifactBuilder


def time_reference(
    predictor: LatencyPredictor, batch: int = 1, seq_len: int = 128, threads: int | None = None
) -> float:
    """Median latency (ms) of the predictor's reference model on this machine, today."""
    space = predictor.search_space
    arch = Arch.from_dict(predictor.reference["arch"])
    threads = threads or predictor.device.get("threads")
    backend = runner.OrtBackend(predictor.device.get("provider", "cpu"), threads)
    with tempfile.TemporaryDirectory(prefix="yoco-calibrate-") as tmp:
        path = ArtifactBuilder(space, predictor.reference["format"], Path(tmp)).build(arch)
        session = backend.load(path)
        feeds = runner.make_feeds(batch, seq_len, space.dims.vocab_size)
        return runner.measure(backend, session, feeds, runner.Protocol())["median_ms"]
