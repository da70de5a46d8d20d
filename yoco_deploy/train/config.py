"""The super-BERT training config: strict YAML (unknown keys are errors), every key
documented, defaults that follow YOCO-BERT's progressive schedule (METHOD.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationError, field_validator

from yoco_deploy.errors import YocoError
from yoco_deploy.util.strict import Strict

Restriction = Literal["max", "top2", "top3", "all"]


class ConfigError(YocoError):
    """A training config is unreadable or invalid."""


class Phase(Strict):
    """One stage of progressive shrinking: which choices of each dimension are open."""

    name: str = Field(description="Label in logs and checkpoints.")
    heads: Restriction = Field("all", description="Head choices open: max, top2, top3, all.")
    ffn: Restriction = Field("max", description="FFN choices open.")
    depth: Restriction = Field("max", description="Depth choices open.")
    epochs: float = Field(1.0, gt=0, description="Passes over the training split.")
    lr: float = Field(2e-5, gt=0, description="Peak learning rate of this phase.")


def yoco_phases(epochs: float = 1.0, lr: float = 2e-5) -> list[Phase]:
    """METHOD.md's schedule: widen heads, then FFN, then depth."""
    spec = [
        ("head0", "top2", "max", "max"),
        ("head1", "all", "max", "max"),
        ("ffn0", "all", "top2", "max"),
        ("ffn1", "all", "top3", "max"),
        ("ffn2", "all", "all", "max"),
        ("layer0", "all", "all", "top2"),
        ("layer1", "all", "all", "top3"),
        ("layer2", "all", "all", "all"),
    ]
    return [Phase(name=n, heads=h, ffn=f, depth=d, epochs=epochs, lr=lr) for n, h, f, d in spec]


class Distillation(Strict):
    alpha: float = Field(0.5, ge=0, le=1, description="Weight of the label loss; 1 disables KD.")
    temperature: float = Field(2.0, gt=0, description="Softmax temperature of the logit KL.")
    hidden_mse: float = Field(0.0, ge=0, description="Weight of hidden-state MSE to the teacher.")


class SNGSettings(Strict):
    delta: float = Field(1.0, gt=0, description="Natural-gradient step length.")
    lam: int = Field(2, ge=2, description="Candidates per SNG update, scored on one batch.")
    exploit_explore: bool = Field(True, description="Sample from p_theta w.p. rho/rho_max.")


class TrainConfig(Strict):
    model: str = Field(description="Super-BERT initialisation: hub id, directory or 'minilm'.")
    teacher: str | None = Field(None, description="Fine-tuned teacher; default: `model`.")
    task: str = Field(description="GLUE task name (sst2, cola, mrpc, rte, stsb, qqp, qnli, mnli).")
    data_dir: Path | None = Field(None, description="Local GLUE TSV or CSV/JSON directory.")
    text_columns: list[str] | None = Field(None, description="CSV/JSON text column(s).")
    label_column: str | None = Field(None, description="CSV/JSON label column.")
    max_train: int | None = Field(None, gt=0, description="Use a seeded subset of train.")
    max_eval: int | None = Field(None, gt=0, description="Cap on dev examples per evaluation.")
    search_fraction: float = Field(0.1, gt=0, lt=1, description="Held out of train for search.")
    max_seq_len: int = Field(128, gt=0, description="Tokens per example.")
    output_dir: Path = Field(description="Checkpoints, logs, the final super-BERT and plots.")
    seed: int = Field(0, description="Seeds data order, sampling, dropout.")
    split_seed: int | None = Field(
        None,
        description="Seeds the train subset and the search split; default: seed. Fixed "
        "while seed varies, runs differ in data order only.",
    )
    batch_size: int = Field(32, gt=0, description="Training batch size (per process).")
    eval_batch_size: int = Field(128, gt=0, description="Evaluation batch size.")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay.")
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="Share of each phase warming up.")
    pooling: Literal["cls", "mean"] | None = Field(
        None,
        description="Sentence readout: cls (BERT's pooler) or mean (masked mean over "
        "tokens); default: what the checkpoint records or declares, else cls.",
    )
    layer_selection: Literal["first", "even"] | None = Field(
        None,
        description="Which layers a depth-L sub-BERT keeps: first (YOCO) or even (evenly "
        "spaced, top included); default: as the checkpoint records, else even.",
    )
    sampling: Literal["yoco", "sandwich"] = Field(
        "yoco",
        description="yoco: one sub-BERT per step (p_theta or uniform); sandwich: the "
        "phase's max + min + k sub-BERTs from the same exploit-explore sampler.",
    )
    sandwich_random: int = Field(2, ge=0, description="k sampled sub-BERTs in the sandwich rule.")
    sandwich_distill: Literal["max", "teacher"] = Field(
        "max",
        description="Soft targets of the sandwich's min and sampled sub-BERTs: the max "
        "sub-BERT's outputs in the same step (in-place distillation) or the teacher's.",
    )
    kd: Distillation = Field(default_factory=Distillation)
    sng: SNGSettings = Field(default_factory=SNGSettings)
    reorder: bool = Field(True, description="Importance-reorder heads/neurons before training.")
    phases: list[Phase] = Field(default_factory=yoco_phases, description="Progressive phases.")
    checkpoint_every: int = Field(200, gt=0, description="Steps between checkpoints.")
    log_every: int = Field(10, gt=0, description="Steps between loss log rows.")
    mixed_precision: Literal["no", "fp16", "bf16"] = Field("no", description="On GPU.")
    space: dict[str, list[int]] | None = Field(None, description="Override depth/heads/ffn.")
    arch: dict | None = Field(
        None,
        description="Train this one sub-BERT alone ({layers: [{heads, ffn}, ...]}), distilled "
        "from the teacher every step: ship's polish and the distilled-alone baseline. "
        "Phases then set only epochs and learning rates.",
    )
    eval_every: int | None = Field(
        None, gt=0, description="Also evaluate on dev every this many steps (a curve)."
    )

    @field_validator("arch")
    @classmethod
    def _arch_parses(cls, arch: dict | None) -> dict | None:
        from yoco_deploy.arch import Arch
        from yoco_deploy.errors import ArchError

        if arch is None:
            return None
        try:
            return Arch.from_dict(arch).to_dict()
        except ArchError as err:
            raise ValueError(str(err)) from None

    @field_validator("phases")
    @classmethod
    def _names_unique(cls, phases: list[Phase]) -> list[Phase]:
        names = [p.name for p in phases]
        if len(set(names)) != len(names) or not phases:
            raise ValueError("phases need unique names, and at least one phase")
        return phases


def load_config(path: str | Path, overrides: dict | None = None) -> TrainConfig:
    from yoco_deploy.util.user_file import load_mapping

    data = load_mapping(Path(path), ConfigError, "the config")
    data.update(overrides or {})
    return parse_config(data, str(path))


def finetune_settings(epochs: float, lr: float, **settings) -> dict:
    """The teacher's training config: the full model alone, one phase, no distillation
    partner and no sampling (``settings`` gives model, task, data and sizes)."""
    return {
        **settings,
        "reorder": False,
        "kd": {"alpha": 1.0},
        "sng": {"exploit_explore": False},
        "phases": [
            {"name": "finetune", "heads": "max", "ffn": "max", "depth": "max",
             "epochs": epochs, "lr": lr}
        ],
    }  # fmt: skip


def parse_config(data: dict, where: str = "config") -> TrainConfig:
    try:
        return TrainConfig(**data)
    except ValidationError as err:
        raise ConfigError(f"{where}: " + "; ".join(validation_problems(err, TrainConfig))) from None


def validation_problems(err: ValidationError, root: type[BaseModel]) -> list[str]:
    """One line per problem; an unknown key names the closest valid key at its level."""
    problems = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"])
        if e["type"] == "extra_forbidden":
            problems.append(f"unknown key {loc!r}{_suggest(e['loc'], root)}")
        else:
            problems.append(f"{loc}: {e['msg']}")
    return problems


def _suggest(loc: tuple, root: type[BaseModel]) -> str:
    import difflib

    model = root
    for part in loc[:-1]:  # walk down to the model that owns the misspelt key
        if isinstance(part, str) and part in model.model_fields:
            model = _submodel(model.model_fields[part].annotation) or model
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _submodel(annotation) -> type[BaseModel] | None:
    """The pydantic model inside an annotation such as ``Phase``, ``list[Phase]``, ``X | None``."""
    import typing

    if typing.get_origin(annotation) is None:
        is_model = isinstance(annotation, type) and issubclass(annotation, BaseModel)
        return annotation if is_model else None
    for arg in typing.get_args(annotation):
        if (found := _submodel(arg)) is not None:
            return found
    return None
