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
# no BERT has this many positions: a larger value was edited in, not measured
MAX_SEQ_LEN = 1 << 16
FIX = "restore the bundle's manifest.json or re-ship the bundle"


class ManifestError(YocoError):
    """A manifest.json that is not one ``ship`` writes."""


@dataclass(frozen=True)
class MeasuredLatency:
    """The bundle's latency as ``ship`` measured it, in milliseconds."""

    median: float
    p90: float
    cv: float
    runs: int
    # at the target's statistic where it is a percentile (the median's tail, ship_timing)
    percentile: float | None = None


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
    # the session it was timed with, once: SessionSpec.to_dict(); None: an older bundle,
    # whose provider and threads (and machine) say it
    session: dict[str, Any] | None = None
    provider: str | None = None  # older bundles only
    threads: int | None = None  # older bundles only; None: ONNX Runtime's default
    seq_len: int
    batch: int
    statistic: str | None = None  # what the latency budget holds for: median or pNN
    throughput: float | None = None  # sequences per second at (batch, seq_len), median
    format: str
    metric: dict[str, Any]  # name, value, loss, split (dev, with ONNX Runtime)
    validation: dict[str, Any]
    int8: dict[str, Any] | None
    onnx_sha256: str
    # tokenizer.json's sha256 (load_bundle checks it); None: a bundle from before it was kept
    tokenizer_sha256: str | None = None
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
    # what chose this sub-BERT: the super-BERT's weights and the search data (sha256, as a
    # search log records them), the search space, the latency predictor (sha256, device);
    # None: an older bundle
    provenance: dict[str, Any] | None = None
    # the Triton model repository in the bundle (deploy/triton.py); None: an older bundle
    triton: dict[str, Any] | None = None
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
        if self.measured_latency_ms.percentile is None:  # a median target: as before
            del body["measured_latency_ms"]["percentile"]
        for key in ("polish", "provenance", "triton", "statistic", "throughput"):
            # without one: as older bundles read
            if body[key] is None:
                del body[key]
        if self.tokenizer_sha256 is None:  # an older bundle's manifest reads back as written
            del body["tokenizer_sha256"]
        for key in ("provider", "threads"):  # the session says them; older bundles keep theirs
            if body[key] is None and self.session is not None:
                del body[key]
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
        for key in ("labels", "data", "timing", "quality"):
            if values.get(key) is None:  # written as null by an older ship
                values.pop(key, None)
        for name, value in values.items():
            _check_value(name, value, known[name].type, where)
        lat = values["measured_latency_ms"]
        try:
            tail = lat.get("percentile")
            values["measured_latency_ms"] = MeasuredLatency(
                float(lat["median"]), float(lat["p90"]), float(lat.get("cv", 0.0)),
                int(lat["runs"]), None if tail is None else float(tail),
            )  # fmt: skip
        except (KeyError, TypeError, ValueError, AttributeError):
            raise ManifestError(
                f"{where}: measured_latency_ms is not {{median, p90, cv, runs}}"
            ) from None
        extra = {k: v for k, v in data.items() if k not in known}
        return cls(**values, extra=extra)

    @classmethod
    def read(cls, path: Path) -> BundleManifest:
        """A bundle folder's manifest (or the manifest file itself)."""
        path = Path(path)
        file = path / FILE if path.is_dir() else path
        return cls.from_dict(read_json(path), str(file))


def read_json(path: Path) -> Any:
    """A bundle folder's manifest (or the manifest file) as written: the digest that
    model.onnx records covers these values, not a re-serialised record."""
    from yoco_deploy.util.user_file import parse_json

    path = Path(path)
    file = path / FILE if path.is_dir() else path
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError(
            f"{path} has no {FILE}: is it a bundle folder written by ship?"
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        raise ManifestError(f"{file} cannot be read as JSON: {err}") from None
    try:
        return parse_json(text, ManifestError, str(file), invalid="cannot be read as JSON")
    except ManifestError as err:
        raise ManifestError(f"{err}: {FIX}") from None


# what each annotation allows in JSON (bool is an int to Python, never to a manifest)
_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "float": (int, float),
    "str": (str,),
    "bool": (bool,),
    "dict": (dict,),
    "list": (list,),
    "None": (type(None),),
    "Any": (object,),
}
_WORDS = {
    "int": "a whole number",
    "float": "a number",
    "str": "a string",
    "bool": "true or false",
    "dict": "an object",
    "list": "a list",
    "None": "null",
}
# a session field's type as its record holds it in JSON, where it differs from SessionSpec's
_SESSION_JSON = {"tuple[tuple[str, str], ...]": "dict | None"}


def _session_types() -> dict[str, str]:
    """The JSON type of each field of a session record, read off SessionSpec (the one
    definition of a session), so a new setting is checked the day it is added."""
    from yoco_deploy.runtime import SessionSpec

    return {f.name: _SESSION_JSON.get(str(f.type), str(f.type)) for f in fields(SessionSpec)}


def _check_type(name: str, value: Any, annotation: str, where: str) -> None:
    kinds = [part.strip().split("[")[0] for part in annotation.split("|")]
    allowed = tuple(t for kind in kinds for t in _JSON_TYPES.get(kind, (object,)))
    if isinstance(value, allowed) and (bool in allowed or not isinstance(value, bool)):
        return
    words = " or ".join(_WORDS.get(kind, kind) for kind in kinds)
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
    raise ManifestError(f"{where}: {name} must be {words}, got {shown}: {FIX}")


def _check_value(name: str, value: Any, annotation: str, where: str) -> None:
    """A manifest value of the JSON type its field declares, within its range."""
    if name == "measured_latency_ms":  # read into MeasuredLatency, which checks it
        return
    _check_type(name, value, annotation, where)
    if name == "seq_len" and not 1 <= value <= MAX_SEQ_LEN:
        raise ManifestError(f"{where}: seq_len must be 1 to {MAX_SEQ_LEN}, got {value}: {FIX}")
    if name == "batch" and value < 1:
        raise ManifestError(f"{where}: batch must be at least 1, got {value}: {FIX}")
    if name == "labels" and not all(isinstance(label, str) for label in value):
        raise ManifestError(f"{where}: labels must be a list of class names: {FIX}")
    if name == "session" and value is not None:
        for key, kind in _session_types().items():
            if key in value:
                _check_type(f"session.{key}", value[key], kind, where)
