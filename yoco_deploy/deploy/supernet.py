"""The trained super-BERT as stage II uses it: loaded with its tokenizer, task data and
theta, and its evaluators (task metric and loss of any sub-BERT with inherited weights)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from yoco_deploy.arch import Arch
from yoco_deploy.model.super_bert import SuperBert
from yoco_deploy.model.supernet_checkpoint import FILE as CHECKPOINT_FILE
from yoco_deploy.model.supernet_checkpoint import SupernetCheckpoint
from yoco_deploy.train.data import (
    Examples,
    TaskData,
    encode,
    load_task_as_configured,
    to_tensors,
)
from yoco_deploy.train.evaluation import Evaluation, evaluate, sorted_by_length


@dataclass
class Supernet:
    super_bert: SuperBert
    tokenizer: Any
    data: TaskData
    theta: list | None
    max_seq_len: int
    source: str = ""  # the folder it was loaded from
    record: SupernetCheckpoint | None = None  # what training recorded (None: a plain BERT)

    @cached_property
    def score_inputs(self) -> dict[str, str]:
        """What a sub-BERT's score depends on besides its arch: the weights and the search
        data. A search log records them, and is replayed only for the same."""
        return {
            "super_bert": weights_digest(self.super_bert),
            "data": examples_digest(self.data.search, self.data.task.name, self.max_seq_len),
        }


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 over every tensor of the state dict (name, dtype, shape, bytes): the weights
    as the evaluator uses them, wherever they were loaded from."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())  # hashed in place, not copied
    return h.hexdigest()


def examples_digest(examples: Examples, task: str, max_seq_len: int) -> str:
    """sha256 of the texts and labels a search scores on, with the task and the length."""
    h = hashlib.sha256(json.dumps([task, max_seq_len, examples.text_a, examples.text_b]).encode())
    h.update(np.ascontiguousarray(examples.labels).tobytes())
    return h.hexdigest()


def load_supernet(
    ref: str, task: str | None = None, data_dir: Path | None = None, max_seq_len: int | None = None
) -> Supernet:
    """A trained super-BERT (``final/`` of `train`, with its theta and split), or any BERT
    classifier (cold start; ``task`` needed)."""
    from yoco_deploy.model.loading import load_tokenizer, resolve
    from yoco_deploy.train.data import DataError

    record = SupernetCheckpoint.read(Path(resolve(ref)))
    config = record.config if record else {}
    task = task or (record.task if record else None)
    if task is None:
        raise DataError(f"{ref} is not a trained super-BERT (no {CHECKPOINT_FILE}): pass --task")
    data = load_task_as_configured(task, data_dir or config.get("data_dir"), config)
    super_bert = SuperBert.from_pretrained(
        ref, data.task.num_labels, config.get("space"), label_names=data.task.label_names
    ).eval()
    trained = record.search_space if record else None
    if trained is not None and not super_bert.space.same_shapes(trained):
        raise DataError(
            f"{ref}: the super-BERT was trained over another search space than its config "
            f"now gives ({trained.shape_dict()}): its theta and weights fit that one only"
        )
    theta = record.theta if record else None
    return Supernet(
        super_bert,
        load_tokenizer(ref),
        data,
        theta,
        max_seq_len or config.get("max_seq_len", 128),
        str(resolve(ref)),
        record,
    )


class SuperBertEvaluator:
    """Task metric and loss with inherited weights on the search split: its first half
    drives the search, its second half re-scores the top candidates."""

    def __init__(
        self,
        supernet: Supernet,
        batch_size: int = 128,
        seed: int = 0,
        device: str = "cpu",
        max_examples: int | None = None,
    ):
        self.sb, self.task = supernet.super_bert.to(device), supernet.data.task
        self.device = torch.device(device)
        enc = encode(supernet.tokenizer, supernet.data.search, supernet.max_seq_len)
        order = np.random.default_rng(seed).permutation(len(enc["labels"]))
        half = len(order) // 2
        cap = half if max_examples is None else min(half, max_examples)  # per half
        self.splits = {
            name: sorted_by_length({k: v[idx] for k, v in enc.items()})
            for name, idx in (("search", order[:cap]), ("rescore", order[half : half + cap]))
        }
        self.batch_size = batch_size

    def evaluate(self, arch: Arch, split: str) -> Evaluation:
        return self.evaluate_with(self.sb, arch, split)

    @torch.no_grad()
    def evaluate_with(self, super_bert: SuperBert, arch: Arch, split: str) -> Evaluation:
        """``arch`` with another super-BERT's weights (a polished one) on the same split."""
        super_bert.to(self.device).eval()
        super_bert.set_active(arch)

        def predict(part):
            inputs = {k: v.to(self.device) for k, v in to_tensors(part).items()}
            return super_bert(**inputs).float().cpu().numpy()

        return evaluate(predict, self.splits[split], self.task, self.batch_size)

    def size(self, split: str) -> int:
        return len(self.splits[split]["labels"])


class ParallelEvaluator:
    """Several processes (one per GPU, started by ``accelerate launch``) run the same
    seeded search; each generation's candidates are dealt round-robin to the processes,
    and every process gathers all the results, so all follow one trajectory."""

    def __init__(self, inner, accelerator):
        self.inner, self.acc = inner, accelerator

    def evaluate(self, arch: Arch, split: str) -> Evaluation:
        return self.inner.evaluate(arch, split)

    def evaluate_many(self, archs: list[Arch], split: str) -> list[Evaluation]:
        from accelerate.utils import gather_object

        n, rank = self.acc.num_processes, self.acc.process_index
        mine = [(i, self.inner.evaluate(a, split)) for i, a in enumerate(archs) if i % n == rank]
        scored = dict(gather_object(mine) if n > 1 else mine)
        return [scored[i] for i in range(len(archs))]


def make_evaluator(supernet: Supernet, seed: int = 0, accelerator=None):
    """The search-split evaluator on this process's device; under ``accelerate launch``
    with several processes, one that splits each generation between them."""
    if accelerator is None:
        from accelerate import Accelerator

        accelerator = Accelerator()
    inner = SuperBertEvaluator(supernet, seed=seed, device=str(accelerator.device))
    return ParallelEvaluator(inner, accelerator)
