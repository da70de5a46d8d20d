"""A bundle's ``manifest.json`` as a typed record, its writer and its reader side by side.

``ship`` builds one ``BundleManifest`` and writes it; the model card, the Python API
(``load_bundle``), the summaries and the Pareto plot read it back through ``read``. This
module needs the standard library only, so ``load_bundle`` keeps working where only
onnxruntime, tokenizers and numpy are installed. Keys this version does not know (a
newer writer) are kept in ``extra`` and written back unchanged.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from yoco_deploy.errors import YocoError

SCHEMA = 1
FILE = "manifest.json"


class ManifestError(YocoError):
    """A manifest.json that is not one ``ship`` writes."""


@dataclass(frozen=True)
class MeasuredLatency:
    """The bundle's latency as ``ship`` measured it, in milliseconds."""

    median: float
    p90: float
    cv: float
    runs: int


@dataclass(frozen=True, kw_only=True)
class BundleManifest:
    """Everything a bundle says about itself; the JSON keys are the field names, in order."""

    schema: int = SCHEMA
    target: str  # as asked (a latency share stays a share)
    arch: dict[str, Any]  # Arch.to_dict()
    arch_id: str
    params: int
    params_non_embedding: int
    flops: int
    budgets: dict[str, float]  # relative latency budgets resolved to ms at ship time
    budget_ms: float | None
    predicted_latency_ms: float | None  # the predictor's, at its profiling speed
    measured_latency_ms: MeasuredLatency
    device: str
    machine: dict[str, Any]
    provider: str
    threads: int
    session: dict[str, Any] | None = None  # SessionSpec.to_dict(); None: an older bundle
    seq_len: int
    batch: int
    format: str
    metric: dict[str, Any]  # name, value, loss, split (dev, with ONNX Runtime)
    validation: dict[str, Any]
    int8: dict[str, Any] | None
    onnx_sha256: str
    size_mb: float
    libraries: dict[str, str]
    created: float
    name: str | None = None
    labels: list[str] = field(default_factory=list)
    base_model: str | None = None
    source_layers: list[int] | None = None
    data: dict[str, Any] = field(default_factory=dict)  # task, source, name
    timing: dict[str, Any] = field(default_factory=dict)  # calibration beside the reference
    quality: dict[str, Any] = field(default_factory=dict)  # the quality gate's record
    # steps, wall_s, teacher, search-split metric before and after, kept; None: not polished
    polish: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # keys a newer writer added

    @property
    def predicted_ms(self) -> float | None:
        """The prediction at the speed the bundle was timed at (calibrated), else the raw one."""
        return self.timing.get("calibrated_prediction_ms", self.predicted_latency_ms)

    @property
    def task(self) -> str | None:
        return self.data.get("task")

    # ---- the writer -------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        body = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        body["measured_latency_ms"] = asdict(self.measured_latency_ms)
        if self.polish is None:  # an unpolished bundle's manifest reads as before polish existed
            del body["polish"]
        return {**body, **self.extra}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def write(self, folder: Path) -> Path:
        from yoco_deploy.util.atomic import write_text

        return write_text(Path(folder) / FILE, self.to_json())

    # ---- the reader -------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: Any, where: str = FILE) -> BundleManifest:
        if not isinstance(data, dict):
            raise ManifestError(f"{where} is not a bundle manifest (a JSON object written by ship)")
        known = {f.name: f for f in fields(cls) if f.name != "extra"}
        required = [
            name
            for name, f in known.items()
            if f.default is MISSING and f.default_factory is MISSING
        ]
        missing = [name for name in required if name not in data]
        if missing:
            raise ManifestError(
                f"{where} is not a bundle manifest written by ship: it has no "
                f"{', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}"
            )
        values = {k: v for k, v in data.items() if k in known}
        lat = values["measured_latency_ms"]
        try:
            values["measured_latency_ms"] = MeasuredLatency(
                float(lat["median"]), float(lat["p90"]), float(lat.get("cv", 0.0)), int(lat["runs"])
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            raise ManifestError(
                f"{where}: measured_latency_ms is not {{median, p90, cv, runs}}"
            ) from None
        for key in ("labels", "data", "timing", "quality"):
            if values.get(key) is None:  # written as null by an older ship
                values.pop(key, None)
        extra = {k: v for k, v in data.items() if k not in known}
        return cls(**values, extra=extra)

    @classmethod
    def read(cls, path: Path) -> BundleManifest:
        """A bundle folder's manifest (or the manifest file itself)."""
        path = Path(path)
        file = path / FILE if path.is_dir() else path
        try:
            data = json.loads(file.read_text())
        except FileNotFoundError:
            raise ManifestError(
                f"{path} has no {FILE}: is it a bundle folder written by ship?"
            ) from None
        except (OSError, UnicodeDecodeError, ValueError) as err:
            raise ManifestError(f"{file} cannot be read as JSON: {err}") from None
        return cls.from_dict(data, str(file))
