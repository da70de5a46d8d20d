"""One command from checkpoint to shipped models: `yoco-deploy run pipeline.yaml`.

Stages: data (built-in task only) -> teacher -> train -> profile and fit (per device) ->
search and ship (per target). A stage is skipped when its outputs are up to date: each
stage records, in WORKDIR/.stages/, a hash of its inputs (its settings and the content
hashes of the outputs it reads) and the content hashes of the outputs it wrote. Every
stage resumes after an interruption (training from its checkpoint, profiling from its
measurements, search from its log). ``--dry-run`` prints the plan.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator

from yoco_deploy.errors import YocoError
from yoco_deploy.train.config import (
    ConfigError,
    finetune_settings,
    parse_config,
    validation_problems,
)
from yoco_deploy.util.hashing import update_with_file
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
    predictor: str | None = Field(None, description="Use this fitted predictor; no profiling.")


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
    from yoco_deploy.device.runner import RunnerError
    from yoco_deploy.errors import YocoError

    try:
        _check_devices_and_targets(pipeline)  # plain text first: cheap and exact
        _check_inputs(pipeline)
    except (YocoError, RunnerError, OSError) as err:
        message = err if not isinstance(err, OSError) else f"{err.strerror} ({err.filename})"
        raise PipelineError(f"{path}: {message}") from None


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
    for device in pipeline.devices:
        if device.predictor:
            from yoco_deploy.device.predictor import LatencyPredictor

            LatencyPredictor.load(Path(device.predictor), space)


def _check_devices_and_targets(pipeline: Pipeline) -> None:
    from yoco_deploy.deploy.budgets import parse_target
    from yoco_deploy.device.profiling import parse_until
    from yoco_deploy.device.runner import SessionSpec, resolve_provider

    for device in pipeline.devices:
        if device.until:
            parse_until(device.until)
    targets = [(text, parse_target(text)) for text in pipeline.targets]
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
        needs_device = {"latency", "latency_share"} & set(target.budgets)
        if needs_device and target.name not in names:
            raise PipelineError(
                f"target {text!r} has a latency budget on {target.name!r}, which is not "
                f"under devices: (known: {', '.join(sorted(names)) or 'none'})"
            )


# ---- up-to-date checks ---------------------------------------------------------------------


def content_hash(path: Path) -> str:
    """Content hash of a file, or of a directory's files (names and bytes)."""
    path = Path(path)
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        if "checkpoint" in f.parts or f.suffix == ".png":
            continue  # resumable state and drawings are not outputs
        h.update(str(f.relative_to(path) if path.is_dir() else f.name).encode())
        update_with_file(h, f)
    return h.hexdigest()


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class Stage:
    key: str
    inputs: dict[str, Any]  # settings and upstream output hashes
    outputs: list[Path]
    run: Callable[[], None]


class StageBook:
    def __init__(self, workdir: Path):
        self.dir = Path(workdir) / ".stages"

    def _file(self, key: str) -> Path:
        return self.dir / f"{key.replace('/', '_').replace(':', '_')}.json"

    def status(self, stage: Stage) -> str:
        record = self._file(stage.key)
        if not record.exists():
            return "never run"
        saved = json.loads(record.read_text())
        if saved["inputs"] != _digest(stage.inputs):
            return "inputs changed"
        for out, digest in saved["outputs"].items():
            if not Path(out).exists() or content_hash(Path(out)) != digest:
                return f"output {Path(out).name} missing or changed"
        return "up to date"

    def record(self, stage: Stage) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        outputs = {str(p): content_hash(p) for p in stage.outputs}
        self._file(stage.key).write_text(
            json.dumps({"inputs": _digest(stage.inputs), "outputs": outputs}, indent=1)
        )


def output_hash(path: Path) -> str | None:
    return content_hash(path) if Path(path).exists() else None


# ---- the stages ------------------------------------------------------------------------------


class Runner:
    def __init__(self, pipeline: Pipeline, say: Callable[[str], None] = print):
        self.p, self.say = pipeline, say
        self.work = Path(pipeline.workdir)
        self.book = StageBook(self.work)
        self.shipped: list = []

    # paths
    @property
    def data_dir(self) -> Path | None:
        return self.work / "data" if self.p.builtin_task else self.p.data_dir

    @property
    def teacher_dir(self) -> Path:
        if self.p.teacher.checkpoint:
            return Path(self.p.teacher.checkpoint)
        return self.work / "teacher" / "final"

    @property
    def super_dir(self) -> Path:
        return self.work / "super" / "final"

    def predictor_path(self, device: DeviceStage) -> Path:
        if device.predictor:
            return Path(device.predictor)
        return self.work / "predictors" / f"{device.name}.json"

    def stages(self) -> list[Stage]:
        """Built lazily: each stage's inputs hash what earlier stages wrote."""
        return [*self._data(), *self._teacher(), self._train(), *self._devices(), *self._targets()]

    def _data(self) -> list[Stage]:
        if not self.p.builtin_task:
            return []
        from yoco_deploy.train.builtin_task import write_task

        out = self.work / "data"
        return [Stage("data", {"builtin": 2, "seed": 0}, [out], lambda: write_task(out))]

    def _teacher(self) -> list[Stage]:
        if self.p.teacher.checkpoint:
            return []
        t, run_dir = self.p.teacher, self.work / "teacher"
        settings = finetune_settings(
            t.epochs, t.lr, model=self.p.model, task=self.p.task, data_dir=self.data_dir,
            output_dir=run_dir, max_train=self.p.max_train, seed=0,
            max_seq_len=self.p.max_seq_len, batch_size=t.batch_size,
        )  # fmt: skip
        inputs = {"settings": settings, "data": self._data_hash()}
        return [
            Stage("teacher", inputs, [self.teacher_dir], lambda: self._fit_run(settings, run_dir))
        ]

    def _train(self) -> Stage:
        run_dir = self.work / "super"
        settings = {
            **self.p.train,
            "model": str(self.teacher_dir),
            "teacher": str(self.teacher_dir),
            "task": self.p.task,
            "data_dir": self.data_dir,
            "output_dir": run_dir,
            "max_train": self.p.max_train,
            "max_seq_len": self.p.max_seq_len,
        }
        inputs = {
            "settings": settings,
            "teacher": output_hash(self.teacher_dir),
            "data": self._data_hash(),
        }
        return Stage("train", inputs, [self.super_dir], lambda: self._fit_run(settings, run_dir))

    def _data_hash(self) -> str | None:
        return output_hash(self.data_dir) if self.data_dir else None

    def _fit_run(self, settings: dict, run_dir: Path) -> None:
        from yoco_deploy.train.config import parse_config
        from yoco_deploy.train.trainer import Trainer

        config = parse_config(
            {
                k: (str(v) if isinstance(v, Path) else v)
                for k, v in settings.items()
                if v is not None
            }
        )
        Trainer(config, log=self.say).train(resume=(run_dir / "checkpoint").exists())

    def _devices(self) -> list[Stage]:
        stages = []
        for d in self.p.devices:
            if d.predictor:
                continue
            profile_dir = self.work / "profiles" / d.name
            settings = {**d.model_dump(), "model": self.p.model, "seq": self.p.max_seq_len}
            stages.append(
                Stage(
                    f"profile:{d.name}",
                    settings,
                    [profile_dir],
                    lambda d=d, out=profile_dir: self._profile(d, out),
                )
            )
            predictor = self.predictor_path(d)
            stages.append(
                Stage(
                    f"fit:{d.name}",
                    {"profile": output_hash(profile_dir)},
                    [predictor],
                    lambda out=profile_dir, pr=predictor: self._fit_predictor(out, pr),
                )
            )
        return stages

    def _profile(self, d: DeviceStage, out: Path) -> None:
        from yoco_deploy.device.profiling import ProfileSettings, parse_until, profile_device
        from yoco_deploy.device.runner import SessionSpec
        from yoco_deploy.model.loading import load_config
        from yoco_deploy.space import SearchSpace

        space = SearchSpace.from_config(load_config(self.p.model), self.p.train.get("space"))
        session = SessionSpec(threads=d.threads, spinning=d.spinning)
        settings = ProfileSettings(
            n=d.n, shapes=((1, self.p.max_seq_len),), session=session, fmt=d.format
        )
        result = profile_device(
            space,
            out,
            d.name,
            settings,
            self.p.model,
            progress=lambda *a: None,
            until=parse_until(d.until) if d.until else None,
            first_round=min(d.n, 24),
        )
        self.say(f"profiled {result.measured} sub-BERTs on {d.name} in {result.wall_s:.0f} s")

    def _fit_predictor(self, profile: Path, predictor: Path) -> None:
        from yoco_deploy.device.fit import fit_profile

        result = fit_profile(profile, predictor)
        holdout = result.predictor.metrics.get("holdout", {}).get(result.predictor.model["type"])
        if holdout:
            self.say(
                f"predictor {predictor.name}: held-out MAPE {holdout['mape']:.1%}, "
                f"within ±10% {holdout['within10']:.0%}"
            )

    def _targets(self) -> list[Stage]:
        from yoco_deploy.deploy.budgets import parse_target

        stages = []
        devices = {d.name: d for d in self.p.devices}
        for text in self.p.targets:
            target = parse_target(text)
            device = devices.get(target.name)
            predictor = (
                self.predictor_path(device)
                if device
                else Path("predictors") / f"{target.name}.json"
            )
            inputs = {
                "target": text,
                "search": self.p.search.model_dump(),
                "ship": self.p.ship.model_dump(),
                "super": output_hash(self.super_dir),
                "predictor": output_hash(predictor) if predictor else None,
            }
            out = self.work / "bundles" / target.slug()
            stages.append(
                Stage(
                    f"search-ship:{text}",
                    inputs,
                    [out],
                    lambda t=target, pr=predictor, o=out: self._search_ship(t, pr, o),
                )
            )
        return stages

    def _search_ship(self, target, predictor: Path | None, out: Path) -> None:
        from yoco_deploy.deploy.budgets import CostModel
        from yoco_deploy.deploy.per_target import load_supernet, search_target, ship_result
        from yoco_deploy.deploy.search import SearchSettings
        from yoco_deploy.deploy.ship import ShipSettings
        from yoco_deploy.device.predictor import LatencyPredictor
        from yoco_deploy.util.atomic import staged_dir

        net = load_supernet(str(self.super_dir))
        space = net.super_bert.space
        p = LatencyPredictor.load(predictor, space) if predictor and predictor.exists() else None
        cost_model = CostModel(target, space, p, net.max_seq_len, 1, fmt=self.p.ship.format)
        s = self.p.search
        settings = SearchSettings(
            algo=s.algo,
            evaluations=s.evaluations,
            seed=s.seed,
            warm_theta=None if s.cold else net.theta,
        )
        result = search_target(net, cost_model, settings, self.work / "search")
        ship = ShipSettings(
            fmt=self.p.ship.format,
            session=self._ship_session(),
            seq_len=net.max_seq_len,
            min_metric=self.p.ship.min_metric,
            allow_weak=self.p.ship.allow_weak,
        )
        with staged_dir(out) as stage:  # the target's previous bundle stays until this works
            shipped = ship_result(net, cost_model, result, stage, ship, say=self.say)
        self.say(f"shipped {out / shipped.path.name}")

    def _ship_session(self) -> dict:
        """The session settings the YAML changes from the profiled ones (usually none)."""
        given = {"provider": self.p.ship.provider, "threads": self.p.ship.threads}
        return {k: v for k, v in given.items() if v is not None}

    # ---- driving ------------------------------------------------------------------------

    def plan(self) -> list[tuple[str, str]]:
        """(stage, status) for every stage, without running anything."""
        return [(stage.key, self.book.status(stage)) for stage in self.stages()]

    def run(self) -> list[tuple[str, str]]:
        """Run every stage that is not up to date, one pipeline per workdir at a time."""
        from yoco_deploy.util.lock import exclusive

        with exclusive(self.work / ".lock", f"pipeline workdir {self.work}"):
            return self._run_stages()

    def _run_stages(self) -> list[tuple[str, str]]:
        done = []
        index = 0
        while True:
            stages = self.stages()  # rebuilt: later stages hash what earlier ones wrote
            if index >= len(stages):
                return done
            stage = stages[index]
            status = self.book.status(stage)
            if status == "up to date":
                self.say(f"[skip] {stage.key}: up to date")
                done.append((stage.key, "skipped"))
            else:
                self.say(f"[run]  {stage.key} ({status})")
                stage.run()
                self.book.record(stage)
                done.append((stage.key, "ran"))
            index += 1

    def bundles(self) -> list[Path]:
        root = self.work / "bundles"
        return sorted(p.parent for p in root.glob("*/*/manifest.json")) if root.exists() else []
