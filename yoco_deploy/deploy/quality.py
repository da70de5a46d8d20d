"""The quality gate at ship time: nothing a constant predictor could match is shipped.

A sub-BERT stuck at the majority class (a dead shallow cut, a search that collapsed) is
as fast as any other and passes every budget; only its metric gives it away. Ship
compares the candidate's dev metric with the best constant prediction's on the same
split and refuses anything not clearly above it.

"Clearly": for accuracy, two binomial standard errors of the constant predictor's score
on that many examples (a model inside that band is indistinguishable, at about 95%, from
a constant one that got lucky), and at least 2 points; for other metrics (F1, Matthews
correlation, Pearson), 0.05. On SST-2 dev (872 sentences, majority 0.509) that is 3.4
points: the floor is 0.543.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from yoco_deploy import runtime
from yoco_deploy.errors import YocoError
from yoco_deploy.train.evaluation import majority_baseline

MIN_MARGIN = 0.02
OTHER_METRIC_MARGIN = 0.05


class QualityError(YocoError):
    """No candidate is clearly better than a constant predictor."""


@dataclass(frozen=True)
class QualityGate:
    metric: str
    baseline: float  # the best constant prediction's score on the ship split
    floor: float  # the least a shipped sub-BERT must score
    rule: str  # how the floor was set, for messages and the manifest
    allow_weak: bool = False

    @classmethod
    def for_split(
        cls,
        task,
        labels: np.ndarray,
        metric: str,
        min_metric: float | None = None,
        allow_weak: bool = False,
    ) -> QualityGate:
        baseline = majority_baseline(task, labels)
        if min_metric is not None:
            return cls(metric, baseline, float(min_metric), "--min-metric", allow_weak)
        if metric == "accuracy":
            n = max(1, len(labels))
            margin = max(MIN_MARGIN, 2 * math.sqrt(baseline * (1 - baseline) / n))
            rule = f"majority class + {margin:.3f} (2 standard errors on {n} examples)"
        else:
            margin, rule = OTHER_METRIC_MARGIN, f"constant prediction + {OTHER_METRIC_MARGIN}"
        return cls(metric, baseline, baseline + margin, rule, allow_weak)

    def passes(self, value: float) -> bool:
        return value >= self.floor

    def record(self, value: float) -> dict:
        """The manifest's view: the numbers, and a warning when shipped anyway."""
        out = {
            "metric": self.metric,
            "majority_baseline": self.baseline,
            "floor": self.floor,
            "rule": self.rule,
            "passed": self.passes(value),
        }
        if not self.passes(value):
            out["warning"] = (
                f"shipped with --allow-weak: {self.metric} {value:.3f} is below the floor "
                f"{self.floor:.3f} (a constant prediction scores {self.baseline:.3f})"
            )
        return out

    def refusal(self, best: float | None, target: str) -> QualityError:
        found = f"the best candidate scored {best:.3f}" if best is not None else "none scored"
        return QualityError(
            f"target {target}: no candidate is clearly better than a constant predictor: "
            f"{found} {self.metric} on dev, the majority class scores {self.baseline:.3f}, "
            f"the floor is {self.floor:.3f} ({self.rule}). Try a looser budget, a longer "
            "super-BERT training (or sampling: sandwich), --min-metric to set another "
            "floor, or --allow-weak to ship it anyway with a warning in the manifest"
        )


def onnx_metric(
    path: Path, data, tokenizer, seq_len: int, spec: runtime.SessionSpec = runtime.SessionSpec()
) -> dict:
    """The task metric and loss of an ONNX file on the dev set, with ONNX Runtime as the
    bundle will be run (the file's own kernels: for fp16 on a GPU, the GPU's)."""
    from yoco_deploy.train.data import encode
    from yoco_deploy.train.evaluation import evaluate, sorted_by_length

    session = spec.load(path)
    enc = sorted_by_length(encode(tokenizer, data.dev, seq_len))
    result = evaluate(lambda feeds: session.run(None, feeds)[0], enc, data.task, 64)
    return {**result.to_dict(), "split": "dev"}


def quality_gate(data, metric_name: str, min_metric: float | None, allow_weak: bool):
    """The gate for the task's dev split (``min_metric``: an explicit floor)."""
    labels = np.asarray(data.dev.labels)
    return QualityGate.for_split(data.task, labels, metric_name, min_metric, allow_weak)
