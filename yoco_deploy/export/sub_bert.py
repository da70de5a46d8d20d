"""One sub-BERT from super-BERT to validated ONNX files: the ``export`` use case.

Layout of the output directory::

    model/             extracted sub-BERT (loads with plain transformers)
    model.onnx         fp32 export, validated against PyTorch
    model.opt.onnx     with ONNX Runtime fusions (--optimize), validated
    model.int8.onnx    dynamic int8 (--quantize int8), drift reported
    model.fp16.onnx    half precision for GPUs (--quantize fp16), validated
    export.json        arch, costs, validation, fused-operator counts, int8 drift
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from yoco_deploy.arch import Arch
from yoco_deploy.costs import Costs, arch_costs
from yoco_deploy.errors import ExportError
from yoco_deploy.export.optimize import convert_fp16, optimize_fused, quantize_int8
from yoco_deploy.export.to_onnx import OnnxSpec, export_onnx, validate_onnx
from yoco_deploy.model.extract import extract, save_extracted
from yoco_deploy.model.super_bert import SuperBert
from yoco_deploy.util.atomic import discard

QUANT_MODES = ("int8", "fp16")
# int8 for CPU targets, fp16 for GPU targets (ORT's CPU kernels gain nothing from fp16).
FORMATS = {
    "fp32": {"optimize": False, "quantize": None},
    "fused": {"optimize": True, "quantize": None},
    "int8": {"optimize": True, "quantize": "int8"},
    "fp16": {"optimize": True, "quantize": "fp16"},
}


@dataclass(frozen=True)
class ExportOptions:
    optimize: bool = False
    quantize: str | None = None
    int8_min_agreement: float | None = None
    int8_samples: int = 64
    save_model_dir: bool = True
    spec: OnnxSpec = field(default_factory=OnnxSpec)

    @classmethod
    def for_format(cls, fmt: str, **kwargs) -> ExportOptions:
        """The deployable formats: what profiling times is what shipping writes."""
        if fmt not in FORMATS:
            raise ExportError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
        return cls(**FORMATS[fmt], **kwargs)

    def __post_init__(self) -> None:
        if self.quantize is not None and self.quantize not in QUANT_MODES:
            raise ExportError(f"unknown quantization {self.quantize!r}; choose from {QUANT_MODES}")


@dataclass(frozen=True)
class ExportReport:
    out_dir: str
    arch: dict[str, Any]
    arch_id: str
    costs: dict[str, Any]
    files: dict[str, str]
    validation: dict[str, dict[str, float]]
    fused_operators: dict[str, int] | None = None
    int8: dict[str, float | int] | None = None

    @property
    def deploy_file(self) -> Path:
        """The most optimized file written: int8 or fp16, else fused, else plain fp32."""
        for key in ("int8", "fp16", "optimized", "fp32"):
            if key in self.files:
                return Path(self.out_dir) / self.files[key]
        raise ExportError("export wrote no ONNX file")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def prepare_out_dir(out_dir: Path) -> Path:
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise ExportError(f"cannot write to output directory {out_dir}: {err.strerror}") from None
    return out_dir


def export_sub_bert(
    super_bert: SuperBert,
    arch: Arch,
    out_dir: Path,
    options: ExportOptions = ExportOptions(),
    tokenizer=None,
    seq_len: int = 128,
    batch: int = 1,
    costs: Costs | None = None,
) -> ExportReport:
    """``costs``: the arch's costs at (seq_len, batch) when the caller has them already."""
    created = not Path(out_dir).exists()
    out_dir = prepare_out_dir(out_dir)
    costs = costs or arch_costs(arch, super_bert.dims, seq_len, batch)
    try:
        return _export(super_bert, arch, out_dir, options, tokenizer, costs)
    except BaseException:
        if created:  # a failed export leaves no folder behind that it made itself
            shutil.rmtree(out_dir, ignore_errors=True)
        raise


def _export(super_bert, arch, out_dir, options, tokenizer, costs: Costs) -> ExportReport:
    dense = extract(super_bert, arch)
    files = {}
    if options.save_model_dir:
        save_extracted(dense, out_dir / "model", tokenizer)
        files["model_dir"] = "model"
    spec = options.spec

    plain = out_dir / "model.onnx"
    tmp = plain.with_name(".model.onnx.tmp")
    try:
        export_onnx(dense, tmp, spec)
        validation = {"fp32": validate_onnx(tmp, dense, spec, what="exported ONNX model")}
    except BaseException:  # an export error, Ctrl-C or SIGTERM: no temporary file left
        discard(tmp)
        raise
    tmp.replace(plain)
    files["fp32"] = plain.name

    fused, int8 = None, None
    source = plain
    if options.optimize:
        opt = out_dir / "model.opt.onnx"
        gpu = options.quantize == "fp16"  # fp16 files are for GPUs: fuse for their kernels
        validation["optimized"], fused = optimize_fused(plain, opt, dense, spec, use_gpu=gpu)
        files["optimized"] = opt.name
        source = opt
    if options.quantize == "int8":
        q = out_dir / "model.int8.onnx"
        int8 = quantize_int8(
            source, q, dense, options.int8_samples, min_agreement=options.int8_min_agreement
        ).to_dict()
        files["int8"] = q.name
    elif options.quantize == "fp16":
        half = out_dir / "model.fp16.onnx"
        validation["fp16"] = convert_fp16(source, half, dense, spec)
        files["fp16"] = half.name

    report = ExportReport(
        out_dir=str(out_dir),
        arch=arch.to_dict(),
        arch_id=arch.arch_id,
        costs=costs.to_dict(),
        files=files,
        validation={k: {"max_abs_diff": v.worst, "atol": v.atol} for k, v in validation.items()},
        fused_operators=fused,
        int8=int8,
    )
    (out_dir / "export.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return report
