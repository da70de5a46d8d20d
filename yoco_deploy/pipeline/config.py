"""The pipeline file (``yoco-deploy run pipeline.yaml``): its strict model, every key
documented, and the checks that fail at load (and under ``--dry-run``), before any work."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator

from yoco_deploy.errors import YocoError
from yoco_deploy.train.config import ConfigError, parse_config, validation_problems
from yoco_deploy.util.strict import Strict


class PipelineError(YocoError):
    """A pipeline file is invalid or a stage cannot run."""


Format = Literal["fp32", "fused", "int8", "fp16"]  # export.FORMATS, checked by a test


class TeacherStage(Strict):
    checkpoint: str | None = Field(None, description="A fine-tuned teacher: skip fine-tuning.")
    epochs: float = Field(2.0, gt=0, description="Fine-tuning passes over train.")
    lr: float = Field(5e-5, gt=0, description="Fine-tuning learning rate.")
    batch_size: int = Field(32, gt=0)


class DeviceStage(Strict):
    name: str = Field(description="Device name: profiles/NAME and predictors/NAME.json.")

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        from yoco_deploy.names import check_name

        return check_name(value, "device name")

    n: int = Field(60, ge=10, description="Most sub-BERTs to profile.")
    until: str | None = Field("within10=0.95", description="Stop profiling at this accuracy.")
    threads: int = Field(2, gt=0, le=512)
    spinning: Literal["stop-after-run", "on", "off"] = Field(
        "stop-after-run", description="Idle worker threads; bundles run as profiled."
    )
    format: Format = Field("int8", description="fp32, fused, int8 (CPU) or fp16 (GPU).")
    batch: list[int] = Field(
        [1], min_length=1, description="Batch sizes to profile (a grid with seq_len)."
    )
    seq_len: list[int] | None = Field(
        None, min_length=1, description="Sequence lengths to profile (default: max_seq_len)."
    )
    predictor: str | None = Field(None, description="Use this fitted predictor; no profiling.")
    prior: str | None = Field(
        None,
        description="Another device's predictor (same space) to adapt: profiling stops at "
        "'until' as judged for the adapted predictor (from 10 sub-BERTs), and fit adapts it.",
    )

    @field_validator("batch", "seq_len")
    @classmethod
    def _positive(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and any(v < 1 for v in value):
            raise ValueError("batch sizes and sequence lengths are positive")
        return value

    def grid(self, max_seq_len: int) -> set[tuple[int, int]]:
        """The (batch, seq_len) grid asked for (``Pipeline.profile_shapes`` adds the
        targets' own shapes)."""
        return {(b, s) for b in self.batch for s in self.seq_len or [max_seq_len]}


class SearchStage(Strict):
    algo: Literal["esng", "random", "evolution"] = "esng"
    evaluations: int = Field(100, gt=0)
    seed: int = 0
    cold: bool = False


class ShipStage(Strict):
    format: Format = "int8"
    provider: str | None = Field(
        None, description="Where bundles run and are timed (default: as profiled): cpu, cuda."
    )
    threads: int | None = Field(None, gt=0, le=512, description="Default: as profiled.")
    min_metric: float | None = Field(
        None,
        ge=-1,
        le=1,
        description="Quality floor; default: the majority class + 2 standard errors.",
    )
    allow_weak: bool = Field(False, description="Ship below the floor, with a warning.")


class Pipeline(Strict):
    model: str = Field(description="Base model: hub id, directory or 'minilm'.")
    task: str = Field(description="GLUE task name (the built-in task uses sst2's format).")
    data_dir: Path | None = Field(None, description="Local data; none: the hub.")
    builtin_task: bool = Field(False, description="Generate the offline demo task instead.")
    workdir: Path = Field(description="Everything the pipeline writes.")
    max_seq_len: int = Field(128, gt=0)
    max_train: int | None = Field(None, gt=0)
    teacher: TeacherStage = Field(default_factory=TeacherStage)
    train: dict[str, Any] = Field(default_factory=dict, description="TrainConfig overrides.")
    devices: list[DeviceStage] = Field(default_factory=list)
    targets: list[str] = Field(description="NAME:latency=6ms,...; latency=50% is relative.")
    search: SearchStage = Field(default_factory=SearchStage)
    ship: ShipStage = Field(default_factory=ShipStage)
    polish: str | int | None = Field(
        "auto",
        description="Distil each chosen sub-BERT alone before it ships: steps (300), "
        "minutes (5min), auto (18% of the super-BERT's training steps) or 0; kept only if "
        "better on the search split. Default: auto.",
    )

    def profile_shapes(self, device: DeviceStage) -> tuple[tuple[int, int], ...]:
        """Where ``device`` is profiled: its grid and the shape of every target on it
        with a latency budget (batch 1 and max_seq_len where a target names none), so
        that each target's latency is predicted at a profiled shape."""
        from yoco_deploy.deploy.budgets import parse_target

        shapes = device.grid(self.max_seq_len)
        for text in self.targets:
            target = parse_target(text)
            if target.name == device.name and target.needs_predictor:
                shapes.add(target.shape(1, self.max_seq_len))
        return tuple(sorted(shapes))


def load_pipeline(path: Path, overrides: dict[str, Any] | None = None) -> Pipeline:
    from yoco_deploy.util.user_file import load_mapping

    data = load_mapping(path, PipelineError, "a pipeline")
    data.update(overrides or {})
    try:
        pipeline = Pipeline(**data)
    except ValidationError as err:
        problems = validation_problems(err, Pipeline)
        raise PipelineError(f"{path}: " + "; ".join(problems)) from None
    try:  # the train overrides now, not after an hour of teacher fine-tuning
        parse_config(
            {"model": "m", "task": pipeline.task, "output_dir": "o", **pipeline.train}, "train"
        )
    except ConfigError as err:
        raise PipelineError(f"{path}: {err}") from None
    _check_before_work(pipeline, path)
    return pipeline


def _check_before_work(pipeline: Pipeline, path: Path) -> None:
    """Everything that can fail without doing work fails now (and under --dry-run), not
    after an hour of training: the task, model, data, sequence length, space, teacher
    and predictors, the workdir, the targets and the devices they name, the ship
    provider."""
    from yoco_deploy.errors import YocoError

    try:
        if pipeline.polish is not None:
            from yoco_deploy.deploy.polish import PolishSpec

            PolishSpec.parse(pipeline.polish)
        _check_workdir(Path(pipeline.workdir))
        _check_devices_and_targets(pipeline)  # plain text first: cheap and exact
        _check_inputs(pipeline)
    except (YocoError, OSError) as err:
        message = err if not isinstance(err, OSError) else f"{err.strerror} ({err.filename})"
        raise PipelineError(f"{path}: {message}") from None


def _check_workdir(workdir: Path) -> None:
    """The workdir is a folder of the pipeline's own: it fills it with teacher/, super/,
    profiles/, bundles/ and .stages/, and replaces folders inside it."""
    where = workdir.expanduser().resolve()
    kinds = {
        Path(where.anchor): "the filesystem root",
        Path.home().resolve(): "your home folder",
        Path.cwd().resolve(): "the current folder (the project's root)",
    }
    if where in kinds:
        raise PipelineError(
            f"workdir {workdir} is {kinds[where]}: the pipeline fills its workdir with "
            "teacher/, super/, profiles/, bundles/ and .stages/; give it a folder of its "
            "own, e.g. runs/my-pipeline"
        )


def _check_inputs(pipeline: Pipeline) -> None:
    from yoco_deploy.model.loading import load_config
    from yoco_deploy.space import SearchSpace
    from yoco_deploy.train.data import get_task

    get_task(pipeline.task)
    for owned in ("model", "teacher", "task", "data_dir", "output_dir", "max_seq_len"):
        if owned in pipeline.train:
            raise PipelineError(
                f"train.{owned} is set by the pipeline itself (top-level keys and its "
                "workdir); remove it from train:"
            )
    if pipeline.data_dir is not None and not Path(pipeline.data_dir).is_dir():
        raise PipelineError(f"data_dir {pipeline.data_dir} is not a folder")
    workdir = Path(pipeline.workdir)
    for folder in (workdir, *workdir.parents):
        if folder.exists():
            if not folder.is_dir():
                raise PipelineError(f"workdir {workdir}: {folder} is a file, not a folder")
            break
    checkpoint = pipeline.teacher.checkpoint
    if checkpoint and not Path(checkpoint).is_dir():
        raise PipelineError(f"teacher.checkpoint {checkpoint} is not a folder")
    space = SearchSpace.from_config(load_config(pipeline.model), pipeline.train.get("space"))
    space.dims.check_seq_len(pipeline.max_seq_len)
    from yoco_deploy.device.predictor import LatencyPredictor

    for device in pipeline.devices:
        for _, seq_len in pipeline.profile_shapes(device):
            space.dims.check_seq_len(seq_len)
        if device.predictor:
            LatencyPredictor.load(Path(device.predictor), space)
        if device.prior:
            if device.predictor:
                raise PipelineError(
                    f"device {device.name!r} names a predictor (no profiling) and a prior "
                    "(to adapt from its profile): keep one"
                )
            LatencyPredictor.load(Path(device.prior), space)


def _check_devices_and_targets(pipeline: Pipeline) -> None:
    from yoco_deploy.deploy.budgets import check_distinct, parse_target
    from yoco_deploy.device.profiling import parse_until
    from yoco_deploy.runtime import SessionSpec, resolve_provider

    for device in pipeline.devices:
        if device.until:
            parse_until(device.until)
    _check_each_device_once(pipeline.devices)
    targets = [(text, parse_target(text)) for text in pipeline.targets]
    check_distinct(targets)
    if pipeline.ship.provider:
        resolve_provider(pipeline.ship.provider)
    for device in pipeline.devices:  # bundles run as profiled: the YAML must agree
        if device.predictor:
            continue
        profiled = SessionSpec(threads=device.threads, spinning=device.spinning)
        asked = profiled.with_options(
            provider=pipeline.ship.provider, threads=pipeline.ship.threads
        )
        if asked != profiled:
            raise PipelineError(
                f"ship asks for {asked.describe()} but device {device.name} is profiled with "
                f"{profiled.describe()}: drop ship.provider/threads, or change the device"
            )
    if not targets:
        raise PipelineError("targets is empty: name at least one (NAME:latency=50%)")
    names = {d.name for d in pipeline.devices}
    for text, target in targets:
        if target.needs_predictor and target.name not in names:
            raise PipelineError(
                f"target {text!r} has a latency budget on {target.name!r}, which is not "
                f"under devices: (known: {', '.join(sorted(names)) or 'none'})"
            )


def _check_each_device_once(devices: list[DeviceStage]) -> None:
    """One entry per device: it names one profile folder and one predictor file."""
    seen: dict[str, DeviceStage] = {}
    for device in devices:
        first = seen.setdefault(device.name, device)
        if first is not device:
            how = "twice" if first == device else "twice, with different settings"
            raise PipelineError(
                f"device {device.name!r} is listed {how} under devices: (it names one "
                "profile and one predictor); keep one entry for it"
            )
