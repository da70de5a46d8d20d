"""Export a dense sub-BERT to ONNX and validate ONNX Runtime against PyTorch.

The export is described as data (``OnnxSpec``). The TorchScript exporter at opset 17 with
eager attention is the path ONNX Runtime's BERT fusion recognises (see STACK.md).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from yoco_deploy.errors import ExportError, OnnxValidationError
from yoco_deploy.runtime import RunnerError, SessionSpec

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT_NAMES = ("logits",)


@dataclass(frozen=True)
class OnnxSpec:
    opset: int = 17
    atol: float = 1e-4
    # Validation shapes (batch, seq): odd sizes catch axes wrongly frozen at export.
    validation_shapes: tuple[tuple[int, int], ...] = ((1, 8), (3, 37), (2, 128))
    dynamic_axes: dict[str, dict[int, str]] = field(
        default_factory=lambda: {
            **{name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES},
            "logits": {0: "batch"},
        }
    )


class _LogitsOnly(torch.nn.Module):
    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.model(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).logits


def sample_inputs(
    vocab_size: int, batch: int, seq: int, seed: int = 0, type_vocab_size: int = 2
) -> dict[str, np.ndarray]:
    """Seeded token ids with ragged padding and two segments, as int64 arrays."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, vocab_size, size=(batch, seq), dtype=np.int64)
    lengths = rng.integers(max(1, seq // 2), seq + 1, size=batch)
    lengths[0] = seq  # one unpadded row
    mask = (np.arange(seq)[None, :] < lengths[:, None]).astype(np.int64)
    types = np.zeros((batch, seq), dtype=np.int64)
    if type_vocab_size > 1:
        types[:, seq // 2 :] = 1
    return {"input_ids": ids * mask, "attention_mask": mask, "token_type_ids": types * mask}


def export_onnx(model: torch.nn.Module, path: Path, spec: OnnxSpec = OnnxSpec()) -> Path:
    """Write ``model`` (a dense sub-BERT in eval mode) to ``path``."""
    config = model.config
    dummy = sample_inputs(config.vocab_size, 2, min(16, config.max_position_embeddings))
    args = tuple(torch.from_numpy(dummy[name]) for name in INPUT_NAMES)
    path = Path(path)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about python ints are expected
        try:
            torch.onnx.export(
                _LogitsOnly(model).eval(),
                args,
                str(path),
                input_names=list(INPUT_NAMES),
                output_names=list(OUTPUT_NAMES),
                dynamic_axes=spec.dynamic_axes,
                opset_version=spec.opset,
                do_constant_folding=True,
                dynamo=False,
            )
        except Exception as err:  # the exporter raises many unrelated types
            raise ExportError(f"ONNX export failed: {type(err).__name__}: {err}") from err
    return path


def ort_session(path: Path, spec: SessionSpec | None = None):
    """An ONNX Runtime session built from ``spec`` (default: the CPU with ONNX Runtime's
    threads, spinning only during a run, so that torch or other sessions in this process
    keep their cores between runs)."""
    try:
        return (spec or SessionSpec()).load(path)
    except RunnerError as err:
        raise ExportError(f"ONNX Runtime cannot load {Path(path).name}: {err}") from err


def run_onnx(session, inputs: dict[str, np.ndarray]) -> np.ndarray:
    wanted = {i.name for i in session.get_inputs()}
    return session.run(None, {k: v for k, v in inputs.items() if k in wanted})[0]


def run_torch(model: torch.nn.Module, inputs: dict[str, np.ndarray]) -> np.ndarray:
    with torch.no_grad():
        tensors = {k: torch.from_numpy(v) for k, v in inputs.items()}
        return model(**tensors).logits.float().numpy()


def validation_shapes(spec: OnnxSpec, max_positions: int) -> list[tuple[int, int]]:
    return [(b, min(s, max_positions)) for b, s in spec.validation_shapes]


@dataclass(frozen=True)
class Validation:
    """Max abs logit difference to PyTorch per validated (batch, seq) shape."""

    max_abs_diff: dict[str, float]
    atol: float

    @property
    def worst(self) -> float:
        return max(self.max_abs_diff.values())


def validate_onnx(
    path: Path, model: torch.nn.Module, spec: OnnxSpec = OnnxSpec(), what: str | None = None
) -> Validation:
    """Compare ONNX Runtime with PyTorch at every validation shape; raise one error that
    lists every mismatching output."""
    session = ort_session(path)
    config = model.config
    diffs, mismatches = {}, []
    for i, (batch, seq) in enumerate(validation_shapes(spec, config.max_position_embeddings)):
        inputs = sample_inputs(config.vocab_size, batch, seq, seed=100 + i)
        expected = run_torch(model, inputs)
        try:
            got = run_onnx(session, inputs)
        except Exception as err:  # report, do not crash, on any ORT failure
            mismatches.append(f"batch={batch} seq={seq}: ONNX Runtime failed ({err})")
            continue
        key = f"{batch}x{seq}"
        if got.shape != expected.shape:
            mismatches.append(f"{key} logits: shape {got.shape} != {expected.shape}")
            continue
        diffs[key] = float(np.abs(got - expected).max())
        if not np.isfinite(got).all() or diffs[key] > spec.atol:
            mismatches.append(f"{key} logits: max abs diff {diffs[key]:.3g}")
    if mismatches:
        raise OnnxValidationError(what or Path(path).name, mismatches, spec.atol)
    return Validation(diffs, spec.atol)
