"""ONNX Runtime transformer fusion, int8 dynamic quantization and fp16, each validated.

Results are written to a temporary file, validated against PyTorch, and only then moved
to their final name: a file at the final path has always passed validation.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from yoco_deploy.errors import ExportError
from yoco_deploy.export.to_onnx import (
    OnnxSpec,
    Validation,
    ort_session,
    run_onnx,
    run_torch,
    sample_inputs,
    validate_onnx,
)
from yoco_deploy.util.atomic import discard

FUSED_OPS = (
    "EmbedLayerNormalization",
    "Attention",
    "SkipLayerNormalization",
    "BiasGelu",
    "FastGelu",
    "Gelu",
    "LayerNormalization",
)


@contextlib.contextmanager
def _quiet():
    # ORT's fusion warns that a pruned layer's attention width differs from the hidden
    # size (expected for sub-BERTs; validation checks the result), and quantization
    # advises pre-processing, through top-level loggers ("fusion_attention", root).
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def _tmp_name(dst: Path) -> Path:
    return dst.with_name(f".{dst.name}.tmp")


@contextlib.contextmanager
def _removed_on_failure(tmp: Path, step: str):
    """A failed step leaves no temporary file behind and raises ExportError naming it."""
    try:
        yield
    except ExportError:
        discard(tmp)
        raise
    except Exception as err:  # ONNX Runtime's tools raise assorted types
        discard(tmp)
        raise ExportError(f"{step} failed: {type(err).__name__}: {err}") from err
    except BaseException:  # Ctrl-C, SIGTERM: no temporary file left either
        discard(tmp)
        raise


def _publish(tmp: Path, dst: Path) -> Path:
    os.replace(tmp, dst)
    return dst


def fused_operator_counts(path: Path) -> dict[str, int]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    counts = dict.fromkeys(FUSED_OPS, 0)
    for node in graph.node:
        if node.op_type in counts:
            counts[node.op_type] += 1
    return counts


def fusion_options():
    """ONNX Runtime's BERT fusions without their symbolic shape inference: it copies the
    whole model, embeddings included, five times per fusion pass (40% of the fusion's
    time on MiniLM), and a BERT export's residual adds, the only thing it checks here,
    always match. The fused graph is the same node for node (tests/test_onnx.py)."""
    from onnxruntime.transformers.fusion_options import FusionOptions

    options = FusionOptions("bert")
    options.enable_shape_inference = False
    return options


def optimize_fused(
    src: Path,
    dst: Path,
    model: torch.nn.Module,
    spec: OnnxSpec = OnnxSpec(),
    use_gpu: bool = False,
    validate: bool = True,
) -> tuple[Validation | None, dict[str, int]]:
    """Apply ONNX Runtime's BERT fusions; head counts are read per layer from the graph.
    ``use_gpu``: the fusions for GPU kernels (for the fp16 files GPUs run); ``validate``
    False: not compared with PyTorch (validation None)."""
    from onnxruntime.transformers.optimizer import optimize_model

    tmp = _tmp_name(dst)
    with _removed_on_failure(tmp, "ONNX Runtime fusion"):
        with _quiet():
            optimized = optimize_model(
                str(src),
                model_type="bert",
                num_heads=0,
                hidden_size=0,
                use_gpu=use_gpu,
                optimization_options=fusion_options(),
            )
        optimized.save_model_to_file(str(tmp))
        validation = validate_onnx(tmp, model, spec, what="fused ONNX model") if validate else None
    counts = fused_operator_counts(tmp)
    _publish(tmp, dst)
    return validation, counts


# fp16 keeps ~3 significant digits; logits of a few units drift by ~1e-3 per layer.
FP16_ATOL = 2e-2


def convert_fp16(
    src: Path, dst: Path, model: torch.nn.Module, spec: OnnxSpec = OnnxSpec()
) -> Validation:
    """Half-precision weights and activations, for GPU targets (Tensor Cores).

    Inputs (int64 ids) and logits (float32) keep their types, so callers do not change.
    Validated against fp32 PyTorch at ``FP16_ATOL`` on the CPU provider, which checks the
    conversion; the GPU's own fp16 kernels are checked when a bundle is timed there.
    """
    import dataclasses

    import onnx
    from onnxruntime.transformers.onnx_model import OnnxModel

    tmp = _tmp_name(dst)
    with _removed_on_failure(tmp, "fp16 conversion"):
        with _quiet():
            converted = OnnxModel(onnx.load(str(src)))
            converted.convert_float_to_float16(keep_io_types=True)
        converted.save_model_to_file(str(tmp))
        loose = dataclasses.replace(spec, atol=max(spec.atol, FP16_ATOL))
        validation = validate_onnx(tmp, model, loose, what="fp16 ONNX model")
    _publish(tmp, dst)
    return validation


@dataclass(frozen=True)
class Int8Report:
    """How far int8 logits drift from fp32 PyTorch on seeded sample inputs."""

    max_abs_logit_diff: float
    mean_abs_logit_diff: float
    argmax_agreement: float
    samples: int

    def to_dict(self) -> dict[str, float | int]:
        return dict(self.__dict__)


def quantize_int8(
    src: Path,
    dst: Path,
    model: torch.nn.Module,
    samples: int = 64,
    seq_len: int = 64,
    min_agreement: float | None = None,
) -> Int8Report | None:
    """Dynamic int8 quantization (per-channel weights: cosine 0.99 vs 0.95 per-tensor on
    real MiniLM, at the same speed). ``min_agreement`` turns drift into a failure;
    ``samples`` 0: drift not measured (None)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = _tmp_name(dst)
    with _removed_on_failure(tmp, "int8 quantization"):
        with _quiet():
            quantize_dynamic(
                str(src),
                str(tmp),
                weight_type=QuantType.QInt8,
                per_channel=True,
                # needed for fused graphs, whose contrib ops carry no type information
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            )
        report = _int8_drift(tmp, model, samples, seq_len) if samples else None
    if report is not None and min_agreement is not None and report.argmax_agreement < min_agreement:
        discard(tmp)
        raise ExportError(
            f"int8 model agrees with fp32 on {report.argmax_agreement:.1%} of argmax "
            f"predictions, below the required {min_agreement:.1%}; ship fp32 instead"
        )
    _publish(tmp, dst)
    return report


def _int8_drift(path: Path, model: torch.nn.Module, samples: int, seq_len: int) -> Int8Report:
    config = model.config
    seq = min(seq_len, config.max_position_embeddings)
    inputs = sample_inputs(config.vocab_size, samples, seq, seed=7)
    expected = run_torch(model, inputs)
    got = run_onnx(ort_session(path), inputs)
    if got.shape != expected.shape or not np.isfinite(got).all():
        raise ExportError(f"int8 model produced invalid logits (shape {got.shape})")
    diff = np.abs(got - expected)
    agreement = float((got.argmax(-1) == expected.argmax(-1)).mean())
    return Int8Report(float(diff.max()), float(diff.mean()), agreement, samples)
