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

import errno
import json
import os
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
from yoco_deploy.util.atomic import discard, staged_dir

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
    # False: no comparison with PyTorch (profiling times random weights; the graph is
    # what it needs)
    validate: bool = True

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


# what an export folder holds: a folder of these alone is replaced by a new export
EXPORT_NAMES = ("model", "model.onnx", "model.opt.onnx", "model.int8.onnx", "model.fp16.onnx",
                "export.json")  # fmt: skip
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def check_out_dir(out_dir: Path) -> Path:
    """An export replaces a folder that is new, empty or an earlier export; a shipped
    bundle (its model.onnx is what its manifest vouches for) or a folder of other files
    is refused before any work."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return out_dir
    if (out_dir / "manifest.json").exists():
        raise ExportError(
            f"{out_dir} is a shipped bundle (it has a manifest.json): an export would replace "
            "its model.onnx under a manifest that no longer describes it; export to another "
            "folder (or ship to make a bundle)"
        )
    foreign = sorted(
        p.name for p in out_dir.iterdir() if p.name not in EXPORT_NAMES and not _leftover(p.name)
    )
    if foreign:
        more = f" and {len(foreign) - 1} more" if foreign[1:] else ""
        raise ExportError(
            f"{out_dir} holds {foreign[0]!r}{more}, which an export does not write: an "
            "export replaces its folder whole, so give --out a new or empty folder, or an "
            "earlier export's"
        )
    return out_dir


def _leftover(name: str) -> bool:
    """A temporary file of an interrupted export (``.model.onnx.tmp``)."""
    return name.startswith(".model") and name.endswith(".tmp")


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
    """Everything written into a folder beside ``out_dir``, which replaces it when all is
    validated: an interrupted export leaves the previous one as it was, never one file
    of each. ``costs``: the arch's costs at (seq_len, batch) when the caller has them."""
    out_dir = check_out_dir(out_dir)
    costs = costs or arch_costs(arch, super_bert.dims, seq_len, batch)
    try:
        with staged_dir(out_dir) as stage:
            return _export(super_bert, arch, stage, out_dir, options, tokenizer, costs)
    except Exception as err:  # writers (safetensors, onnx, ORT) each raise their own type
        if _no_space(err):
            raise _full(out_dir) from None
        raise


def _no_space(err: BaseException | None) -> bool:
    """Whether a full disk (or quota, or file-size limit) caused ``err``."""
    seen = 0
    while err is not None and seen < 8:
        if isinstance(err, OSError) and err.errno in _NO_SPACE:
            return True
        if any(os.strerror(code) in str(err) for code in _NO_SPACE):
            return True
        err, seen = err.__cause__ or err.__context__, seen + 1
    return False


def _full(out_dir: Path) -> ExportError:
    return ExportError(
        f"no space left to write the export to {out_dir}: free some space or give --out "
        "a folder on another disk (nothing was replaced)"
    )


def _export(super_bert, arch, out_dir, final, options, tokenizer, costs: Costs) -> ExportReport:
    """The files written into ``out_dir``; the report names ``final``, where they go."""
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
        validation = (
            {"fp32": validate_onnx(tmp, dense, spec, what="exported ONNX model")}
            if options.validate
            else {}
        )
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
        checked, fused = optimize_fused(
            plain, opt, dense, spec, use_gpu=gpu, validate=options.validate
        )
        if checked is not None:
            validation["optimized"] = checked
        files["optimized"] = opt.name
        source = opt
    if options.quantize == "int8":
        q = out_dir / "model.int8.onnx"
        drift = quantize_int8(
            source,
            q,
            dense,
            options.int8_samples if options.validate else 0,
            min_agreement=options.int8_min_agreement,
        )
        int8 = drift.to_dict() if drift is not None else None
        files["int8"] = q.name
    elif options.quantize == "fp16":
        half = out_dir / "model.fp16.onnx"
        validation["fp16"] = convert_fp16(source, half, dense, spec)
        files["fp16"] = half.name

    report = ExportReport(
        out_dir=str(final),
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
