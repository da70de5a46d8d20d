"""One command from checkpoint to shipped models: `yoco-deploy run pipeline.yaml`.

Stages: data (built-in task only) -> teacher -> train -> profile and fit (per device) ->
search and ship (per target). A stage is skipped when its outputs are up to date: each
stage records, in WORKDIR/.stages/, a hash of its inputs (its settings and the content
hashes of the outputs it reads) and the content hashes of the outputs it wrote. Every
stage resumes after an interruption (training from its checkpoint, profiling from its
measurements, search from its log). ``--dry-run`` prints the plan.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from yoco_deploy.pipeline.config import DeviceStage, Pipeline
from yoco_deploy.pipeline.stages import Stage, StageBook, output_hash
from yoco_deploy.train.config import finetune_settings

TARGET_STAGE = "search-ship:"  # then the target as written


class PipelineRun:
    """A pipeline's stages over its workdir: planned, then run in order, each skipped
    when up to date (``Stage``, ``StageBook``)."""

    def __init__(self, pipeline: Pipeline, say: Callable[[str], None] = print):
        self.p, self.say = pipeline, say
        self.work = Path(pipeline.workdir)
        self.book = StageBook(self.work)
        self.shipped: list = []
        self.refused: dict[str, str] = {}  # target as written: why it was refused

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
            # the grid only when it is not the default, so that older runs keep their stages
            grid = self.p.profile_shapes(d)
            default = grid == ((1, self.p.max_seq_len),)
            shape = {} if default else {"shapes": [list(x) for x in grid]}
            settings = {
                **d.model_dump(exclude={"batch", "seq_len"}),
                "model": self.p.model,
                "seq": self.p.max_seq_len,
                **shape,
            }
            stages.append(
                Stage(
                    f"profile:{d.name}",
                    settings,
                    [profile_dir],
                    lambda d=d, out=profile_dir: self._profile(d, out),
                )
            )
            predictor = self.predictor_path(d)
            prior = {"prior": output_hash(Path(d.prior))} if d.prior else {}
            stages.append(
                Stage(
                    f"fit:{d.name}",
                    {"profile": output_hash(profile_dir), **prior},
                    [predictor],
                    lambda out=profile_dir, pr=predictor, d=d: self._fit_predictor(out, pr, d),
                )
            )
        return stages

    def _profile(self, d: DeviceStage, out: Path) -> None:
        from yoco_deploy.device.profiling import ProfileSettings, parse_until, profile_device
        from yoco_deploy.model.loading import load_config
        from yoco_deploy.runtime import SessionSpec
        from yoco_deploy.space import SearchSpace

        space = SearchSpace.from_config(load_config(self.p.model), self.p.train.get("space"))
        session = SessionSpec(threads=d.threads, spinning=d.spinning)
        settings = ProfileSettings(
            n=d.n, shapes=self.p.profile_shapes(d), session=session, fmt=d.format
        )
        prior = None
        if d.prior:
            from yoco_deploy.device.predictor import LatencyPredictor

            prior = LatencyPredictor.load(Path(d.prior), space).model
        result = profile_device(
            space,
            out,
            d.name,
            settings,
            self.p.model,
            progress=lambda *a: None,
            until=parse_until(d.until) if d.until else None,
            # 10 measurements already fit MiniLM's predictor to 100% within +-10% without a
            # prior (bench/results/predictor_transfer-amd-epyc.md); --until adds more if not
            first_round=min(d.n, 10 if prior else 16),
            step=5 if prior else 10,
            prior=prior,
        )
        self.say(f"profiled {result.measured} sub-BERTs on {d.name} in {result.wall_s:.0f} s")

    def _fit_predictor(self, profile: Path, predictor: Path, d: DeviceStage) -> None:
        from yoco_deploy.device.fit import fit_profile

        result = fit_profile(profile, predictor, prior=Path(d.prior) if d.prior else None)
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
                "polish": self.p.polish,
                "super": output_hash(self.super_dir),
                "predictor": output_hash(predictor) if predictor else None,
            }
            out = self.work / "bundles" / target.slug()
            stages.append(
                Stage(
                    f"{TARGET_STAGE}{text}",
                    inputs,
                    [out],
                    lambda t=target, pr=predictor, o=out: self._search_ship(t, pr, o),
                )
            )
        return stages

    def _search_ship(self, target, predictor: Path | None, out: Path) -> None:
        from yoco_deploy.deploy.per_target import DeployJob
        from yoco_deploy.deploy.search import SearchSettings
        from yoco_deploy.deploy.ship import ShipSettings
        from yoco_deploy.deploy.supernet import load_supernet
        from yoco_deploy.util.atomic import staged_dir

        net = load_supernet(str(self.super_dir))
        s, ship = self.p.search, self.p.ship
        job = DeployJob(
            targets=(target,),
            search=SearchSettings(algo=s.algo, evaluations=s.evaluations, seed=s.seed),
            ship=ShipSettings.from_options(
                ship.format, net.max_seq_len, 1, ship.provider, ship.threads,
                min_metric=ship.min_metric, allow_weak=ship.allow_weak, polish=self.p.polish,
            ),
            predictor_files={target.name: predictor} if predictor else {},
            logs=self.work / "search",
            polish_runs=self.work / "polish",
            cold=s.cold,
        )  # fmt: skip
        (cm,) = job.cost_models(net, self.say)
        result = job.run_search(net, cm)
        # the target's previous bundle stays until this one is written
        with staged_dir(out) as stage:
            staged = replace(job, bundles=stage)
            shipped = staged.run_ship(net, cm, [c.arch for c in result.ranked], self.say)
        self.say(f"shipped {out / shipped.path.name}")

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
        self.refused.clear()  # what this run refused
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
                if self._run_stage(stage):
                    self.book.record(stage)
                    done.append((stage.key, "ran"))
                else:  # not recorded: the next run retries it
                    done.append((stage.key, "refused"))
            index += 1

    def _run_stage(self, stage: Stage) -> bool:
        """Run one stage; False when it is a target's stage and the target was refused
        (one target's budgets or quality gate must not cost the others their bundles)."""
        from yoco_deploy.deploy.per_target import attempt

        if not stage.key.startswith(TARGET_STAGE):
            stage.run()
            return True

        def work() -> bool:
            stage.run()
            return True

        target = stage.key.removeprefix(TARGET_STAGE)
        return attempt(target, work, self.refused, self.say) is not None

    def check_refused(self) -> None:
        """After ``run``: one error naming every refused target, if any was."""
        from yoco_deploy.deploy.per_target import TargetsRefused

        if self.refused:
            rerun = "rerun the same command to retry only those (the shipped ones are up to date)"
            raise TargetsRefused(self.refused, len(self.p.targets), rerun)

    def bundles(self) -> list[Path]:
        """Every target's bundle; not a folder being written (``.NAME.staging-PID``)."""
        root = self.work / "bundles"
        if not root.exists():
            return []
        found = [p.parent.relative_to(root) for p in root.glob("*/*/manifest.json")]
        return sorted(root / b for b in found if not any(n.startswith(".") for n in b.parts))
