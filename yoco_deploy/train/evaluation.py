"""One evaluation of a classifier on a split: the task's main metric and its loss together.

Used by the trainer, the search evaluator, the ONNX dev metric at ship time and the
benchmarks, so that every number the tool reports is computed one way: batches sorted by
length and trimmed of shared padding, logits from whatever runs the model (a super-BERT
slice, a dense model, an ONNX Runtime session), metric and loss from the same logits.
The constant (majority-class) predictor's score on the same split is the floor a shipped
model must clear.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from yoco_deploy.train.data import Task, compute_metrics, trim_padding

# Takes a dict of int64 arrays (input_ids, attention_mask, token_type_ids), returns logits.
Predict = Callable[[dict[str, np.ndarray]], np.ndarray]


@dataclass(frozen=True)
class Evaluation:
    metric: str  # the task's main metric
    value: float
    loss: float  # cross-entropy (MSE for regression) of the same logits
    n: int
    metrics: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "name": self.metric,
            "value": self.value,
            "loss": self.loss,
            "n": self.n,
            "values": self.metrics,
        }


def sorted_by_length(enc: Mapping[str, np.ndarray], limit: int | None = None) -> dict:
    """The first ``limit`` examples, ordered by length so that trimmed batches carry little
    padding (the metric does not depend on the order)."""
    n = len(enc["labels"]) if limit is None else min(limit, len(enc["labels"]))
    lengths = np.asarray(enc["attention_mask"][:n]).sum(axis=1)
    order = np.argsort(lengths, kind="stable")
    return {k: np.asarray(v)[:n][order] for k, v in enc.items()}


def logits_of(predict: Predict, enc: Mapping[str, np.ndarray], batch_size: int) -> np.ndarray:
    inputs = {k: v for k, v in enc.items() if k != "labels"}
    n = len(enc["labels"])
    outs = [
        np.asarray(predict(trim_padding({k: v[i : i + batch_size] for k, v in inputs.items()})))
        for i in range(0, n, batch_size)
    ]
    return np.concatenate(outs).astype(np.float64)


def loss_of(task: Task, logits: np.ndarray, labels: np.ndarray) -> float:
    if task.labels is None:
        return float(np.mean((logits.reshape(-1) - labels) ** 2))
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    return float(-log_probs[np.arange(len(labels)), labels.astype(int)].mean())


def evaluate(
    predict: Predict, enc: Mapping[str, np.ndarray], task: Task, batch_size: int = 128
) -> Evaluation:
    """The task's metrics and loss of ``predict`` on the encoded split ``enc``."""
    labels = np.asarray(enc["labels"])
    logits = logits_of(predict, enc, batch_size)
    metrics = compute_metrics(task, logits, labels)
    name = task.metric if task.metric in metrics else "accuracy"
    return Evaluation(
        name, float(metrics[name]), loss_of(task, logits, labels), len(labels), metrics
    )


def majority_baseline(task: Task, labels: np.ndarray) -> float:
    """The main metric of the best constant prediction on these labels (for accuracy, the
    majority class's share; a constant regression output has no correlation: 0)."""
    labels = np.asarray(labels)
    if task.labels is None:
        return 0.0
    best = -math.inf
    for c in range(task.num_labels):
        logits = np.zeros((len(labels), task.num_labels))
        logits[:, c] = 1.0
        metrics = compute_metrics(task, logits, labels)
        value = metrics.get(task.metric, metrics["accuracy"])
        best = max(best, 0.0 if math.isnan(value) else value)
    return float(best)
