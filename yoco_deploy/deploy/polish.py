"""Polish: before a chosen sub-BERT ships, distil it alone from the teacher for a short
while (its own budget's model, not every budget's at once), and keep the result only if
it scores better on the search split (dev never decides; it only reports what ships).

The run is the trainer's own (``TrainConfig.arch``: one sub-BERT, the super-BERT's loss,
data and teacher), in a folder beside the bundles, so an interrupted polish resumes and a
finished one is reused on a rerun.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yoco_deploy.arch import Arch
from yoco_deploy.errors import YocoError

LR = 3e-5  # the super-BERT recipe's learning rate
# The default polish, as a share of the super-BERT's own training steps: bench/compress_once
# polished 300 steps after 1,686 (about 4% of the super-BERT's wall time per budget), which
# lifted SST-2 dev at all four budgets it tried (most at the tightest: +0.7 points at 35%).
AUTO_SHARE = 0.18


class PolishError(YocoError):
    """Polish cannot run as asked."""


@dataclass(frozen=True)
class PolishSpec:
    """How long to polish: ``steps`` training steps, ``minutes`` of training on this
    machine (turned into steps by timing a few), or ``share`` of the super-BERT's own
    training steps (``auto``, the default: skipped where the super-BERT has no training
    record or its teacher is gone, since nobody asked for it by name)."""

    steps: int | None = None
    minutes: float | None = None
    share: float | None = None
    lr: float = LR
    seed: int | None = None  # the data order; default: the super-BERT's training seed

    @classmethod
    def parse(cls, value: Any) -> PolishSpec | None:
        """``300`` (steps), ``5min`` / ``5m`` (minutes), ``auto``, ``0`` / ``off``: none."""
        text = str(value).strip().lower()
        if text in ("0", "off", "none", "no", "false"):
            return None
        if text == "auto":
            return cls.auto()
        if re.fullmatch(r"\d+", text):
            return cls(steps=int(text))
        m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(m|min|minutes?)", text)
        if m and float(m.group(1)) > 0:
            return cls(minutes=float(m.group(1)))
        raise PolishError(
            f"--polish {value!r}: give training steps (e.g. 300), minutes (e.g. 5min), "
            "auto, or 0 for none"
        )

    @classmethod
    def auto(cls) -> PolishSpec:
        return cls(share=AUTO_SHARE)

    @property
    def is_auto(self) -> bool:
        return self.share is not None

    def describe(self) -> str:
        if self.steps is not None:
            return f"{self.steps} steps"
        if self.minutes is not None:
            return f"{self.minutes:g} min"
        return f"auto ({self.share:.0%} of the super-BERT's training steps)"

    def steps_for(self, net, arch: Arch) -> int:
        """Training steps this spec means for ``arch`` of ``net``."""
        if self.steps is not None:
            return self.steps
        if self.minutes is not None:
            return _steps_in(net, arch, self)
        return max(1, round(self.share * net.record.steps))


@dataclass(frozen=True)
class Polished:
    """A polish's outcome: the polished super-BERT (only ``arch``'s weights moved) and
    what the manifest records."""

    super_bert: Any
    kept: bool
    record: dict[str, Any]
    run: Path  # the polish run's folder (its final/ holds the polished weights)


def polish_config(net, arch: Arch, steps: int, spec: PolishSpec, out: Path) -> dict[str, Any]:
    """The super-BERT's own training config, narrowed to ``arch`` alone for ``steps``
    steps, starting from the super-BERT's weights (already importance-ordered), on the
    same train subset and search split."""
    from yoco_deploy.train.data import split_seed_of

    if (reason := unavailable(net)) is not None:
        raise PolishError(f"{reason}; ship without --polish")
    base = dict(net.record.config)
    teacher = base.get("teacher") or base.get("model")
    per_epoch = max(1, len(net.data.train) // base.get("batch_size", 32))
    return {
        **base,
        "model": net.source,
        "teacher": str(teacher),
        "output_dir": str(out),
        # the super-BERT's train subset and search split, whatever seed orders the data
        "split_seed": split_seed_of(base),
        "seed": base.get("seed", 0) if spec.seed is None else spec.seed,
        "arch": arch.to_dict(),
        "reorder": False,  # the super-BERT's order is what its sub-BERTs are cut by
        "eval_every": None,
        "checkpoint_every": max(10, steps // 4),
        "phases": [{"name": "polish", "heads": "all", "ffn": "all", "depth": "all",
                    "epochs": steps / per_epoch, "lr": spec.lr}],
    }  # fmt: skip


def unavailable(net, spec: PolishSpec | None = None) -> str | None:
    """Why ``net`` cannot be polished here as ``spec`` asks (None: it can)."""
    if net.record is None:
        return (
            f"{net.source} is not a super-BERT trained by yoco-deploy (no training record): "
            "polish needs its teacher, data and loss"
        )
    if spec is not None and spec.is_auto and not net.record.steps:
        return f"{net.source}'s training record has no step count to take a share of"
    base = net.record.config
    teacher = base.get("teacher") or base.get("model")
    if not teacher or not Path(str(teacher)).exists():
        return (
            f"polish distils from the teacher the super-BERT was trained with ({teacher}), "
            "which is not on this machine: put it back there"
        )
    return None


def polish(net, arch: Arch, spec: PolishSpec, work: Path, evaluator, say=print) -> Polished:
    """Polish ``arch`` (resuming or reusing a run in ``work``), score both versions on the
    search split and keep the better one."""
    from yoco_deploy.model.super_bert import SuperBert
    from yoco_deploy.train.config import parse_config
    from yoco_deploy.train.trainer import Trainer

    if (reason := unavailable(net, spec)) is not None:
        raise PolishError(f"{reason}; ship without --polish")
    steps = spec.steps_for(net, arch)
    settings = polish_config(net, arch, steps, spec, Path("."))
    digest = _digest({k: v for k, v in settings.items() if k != "output_dir"})
    out = Path(work) / f"{arch.arch_id}-{steps}steps-{digest}"
    config = parse_config({**settings, "output_dir": str(out)}, "polish")
    if not (out / "final").is_dir():
        say(f"polishing {arch.short()}: {steps} steps alone from the teacher")
        trainer = Trainer(config, net.data, net.tokenizer, log=say)
        trainer.train(resume=(out / "checkpoint").is_dir() or (out / "checkpoint.old").is_dir())
    space = net.super_bert.space
    polished = SuperBert.from_pretrained(
        str(out / "final"), net.data.task.num_labels, net.record.config.get("space"),
        label_names=net.data.task.label_names,
    ).eval()  # fmt: skip
    if not polished.space.same_shapes(space):
        raise PolishError(f"{out}: the polished model's space differs from the super-BERT's")
    before = _search_metric(evaluator, net.super_bert, arch)
    after = _search_metric(evaluator, polished, arch)
    kept = after["value"] > before["value"]
    record = {
        "steps": steps,
        "asked": spec.describe(),
        "lr": spec.lr,
        "seed": config.seed,
        "wall_s": _train_seconds(out),
        "teacher": Path(config.teacher).name,
        "split": "search",
        "metric": before["name"],
        "before": before["value"],
        "after": after["value"],
        "kept": kept,
    }
    say(
        f"polish {arch.short()}: search-split {before['name']} {before['value']:.4f} -> "
        f"{after['value']:.4f}: {'kept' if kept else 'not better, the unpolished one ships'}"
    )
    return Polished(polished if kept else net.super_bert, kept, record, out)


def _search_metric(evaluator, super_bert, arch: Arch) -> dict[str, Any]:
    """The task metric on the whole search split (both halves) with these weights."""
    results = [evaluator.evaluate_with(super_bert, arch, half) for half in ("search", "rescore")]
    name = next(iter(results[0].metrics))
    sizes = [evaluator.size(half) for half in ("search", "rescore")]
    value = sum(r.metrics[name] * n for r, n in zip(results, sizes, strict=True)) / sum(sizes)
    return {"name": name, "value": float(value)}


def _steps_in(net, arch: Arch, spec: PolishSpec) -> int:
    """Steps that fit ``spec.minutes`` here: a few steps of the same run, timed."""
    from yoco_deploy.train.config import parse_config
    from yoco_deploy.train.probe import seconds_per_step

    config = parse_config(polish_config(net, arch, 100, spec, Path(".")), "polish")
    return max(1, int(spec.minutes * 60 / seconds_per_step(config, net.data, net.tokenizer)))


def _train_seconds(out: Path) -> float | None:
    """Seconds the run spent in training steps (its log's last train row)."""
    from yoco_deploy.train.run_log import train_rows

    rows = train_rows(out)
    return rows[-1]["train_s"] if rows else None


def _digest(settings: dict[str, Any]) -> str:
    canonical = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:8]
