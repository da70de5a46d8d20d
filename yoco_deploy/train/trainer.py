"""YOCO stage I: train the super-BERT so that every sub-BERT is good without retraining.

Progressive phases (heads, then FFN, then depth); each step trains one sub-BERT (YOCO)
or the sandwich (the phase's max on labels and the teacher, its min and k sampled
sub-BERTs distilled in place from the max's outputs, as in BigNAS); loss = alpha CE +
(1 - alpha) T^2 KL(teacher || student) (+ hidden-state MSE). Sub-BERTs come from p_theta
with probability rho/rho_max, else uniformly from the phase's sub-space. Those drawn from
p_theta are collected; once lambda are in hand they are scored together on the current
batch, *before* the optimizer step, and theta takes an SNG step (cells beyond a
candidate's depth are masked).

Everything runs through accelerate (CPU, one or many GPUs, mixed precision). The batch
order is a pure function of (seed, epoch), so a resumed run sees exactly the batches an
uninterrupted run would.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from yoco_deploy.arch import Arch
from yoco_deploy.costs import arch_costs
from yoco_deploy.errors import Terminated, YocoError
from yoco_deploy.model.super_bert import SuperBert
from yoco_deploy.model.supernet_checkpoint import SupernetCheckpoint
from yoco_deploy.plots import plot_metric_vs_flops
from yoco_deploy.train.config import Phase, TrainConfig
from yoco_deploy.train.data import (
    TaskData,
    encode,
    load_task_as_configured,
    to_tensors,
    trim_padding,
)
from yoco_deploy.train.evaluation import Evaluation, evaluate, sorted_by_length
from yoco_deploy.train.sng import CategoricalSNG, SubSpace


class TrainError(YocoError):
    """Training cannot start or resume as asked."""


@dataclass(frozen=True)
class PhasePlan:
    phase: Phase
    start: int  # first global step
    steps: int
    sub: SubSpace


def restrict(choices: tuple[int, ...], how: str) -> list[int]:
    top = sorted(choices, reverse=True)
    return {"max": top[:1], "top2": top[:2], "top3": top[:3], "all": top}[how]


def plan_phases(config: TrainConfig, space, steps_per_epoch: int) -> list[PhasePlan]:
    plans, start = [], 0
    for phase in config.phases:
        steps = max(1, math.ceil(phase.epochs * steps_per_epoch))
        sub = SubSpace.of(
            space,
            restrict(space.depth_choices, phase.depth),
            restrict(space.head_choices, phase.heads),
            restrict(space.ffn_choices, phase.ffn),
        )
        plans.append(PhasePlan(phase, start, steps, sub))
        start += steps
    return plans


def representative_archs(space) -> dict[str, Arch]:
    """max, min and two uniform sub-BERTs in between, for per-phase evaluation."""

    def mid(c, q):
        return c[round(q * (len(c) - 1))]

    out = {"max": space.max_arch(), "min": space.min_arch()}
    for q, name in ((2 / 3, "mid-large"), (1 / 3, "mid-small")):
        out[name] = Arch.uniform(
            mid(space.depth_choices, q), mid(space.head_choices, q), mid(space.ffn_choices, q)
        )
    return out


def soft_loss(student, teacher, temperature: float, num_labels: int):
    """T^2 KL(teacher || student) on logits (MSE for regression)."""
    if num_labels == 1:
        return F.mse_loss(student, teacher)
    t = temperature
    kl = F.kl_div(
        F.log_softmax(student / t, -1),
        F.log_softmax(teacher / t, -1),
        reduction="batchmean",
        log_target=True,
    )
    return kl * t * t


def distill_loss(student, teacher, labels, kd, num_labels, s_hidden=None, t_hidden=None):
    task = (
        F.mse_loss(student.squeeze(-1), labels.float())
        if num_labels == 1
        else F.cross_entropy(student, labels)
    )
    if teacher is None:
        return task
    soft = soft_loss(student, teacher, kd.temperature, num_labels)
    loss = kd.alpha * task + (1 - kd.alpha) * soft
    if kd.hidden_mse and s_hidden is not None and t_hidden is not None:
        loss = loss + kd.hidden_mse * sum(
            F.mse_loss(s, t) for s, t in zip(s_hidden, t_hidden, strict=False)
        ) / len(s_hidden)
    return loss


class Trainer:
    def __init__(
        self,
        config: TrainConfig,
        data: TaskData | None = None,
        tokenizer=None,
        log: Callable[[str], None] = print,
    ):
        from accelerate import Accelerator

        self.config = c = config
        self.say = log
        if c.mixed_precision == "fp16" and not torch.cuda.is_available():
            from yoco_deploy.train.config import ConfigError

            raise ConfigError(
                "mixed_precision: fp16 needs a CUDA GPU and none is visible; use bf16 "
                "(CPUs support it) or no"
            )
        from accelerate.state import AcceleratorState
        from accelerate.utils import DistributedDataParallelKwargs

        # One process may train twice with different precisions (the pipeline's teacher,
        # then its super-BERT), but accelerate keeps one global precision: start each
        # training from a fresh one (the device and process group are kept).
        AcceleratorState._reset_state(reset_partial_state=False)

        # Layers beyond a sub-BERT's depth get no gradient in that step: DDP must allow it.
        ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
        self.accelerator = Accelerator(mixed_precision=c.mixed_precision, kwargs_handlers=[ddp])
        torch.manual_seed(c.seed)
        self.data = data or load_task_as_configured(c.task, c.data_dir, c)
        task = self.data.task
        from yoco_deploy.model.loading import load_tokenizer

        self.tokenizer = tokenizer or load_tokenizer(c.model)
        if self.tokenizer is None:
            raise TrainError(f"model {c.model!r} has no tokenizer files")
        self.super_bert = SuperBert.from_pretrained(
            c.model, task.num_labels, c.space, c.pooling, c.layer_selection, task.label_names
        )
        self.teacher = None
        if c.kd.alpha < 1 or c.kd.hidden_mse > 0:
            # the full model under its own recorded readout (a mean-pooled teacher stays so)
            self.teacher = SuperBert.from_pretrained(c.teacher or c.model, task.num_labels)
            self.teacher.set_max()
            self.teacher.eval()
            for p in self.teacher.parameters():
                p.requires_grad_(False)
        self.space = self.super_bert.space
        self.space.dims.check_seq_len(c.max_seq_len)
        self.train_enc = encode(self.tokenizer, self.data.train, c.max_seq_len)
        self.dev_enc = encode(self.tokenizer, self.data.dev, c.max_seq_len)
        # batch_size is per process: a step consumes batch_size x processes examples.
        self.world = self.accelerator.num_processes
        self.steps_per_epoch = max(1, len(self.data.train) // (c.batch_size * self.world))
        self.plans = plan_phases(c, self.space, self.steps_per_epoch)
        self.total_steps = sum(p.steps for p in self.plans)
        self.sng = CategoricalSNG(self.space, c.sng.delta, c.sng.lam, c.seed)
        self.rng = random.Random(c.seed)
        self.step = 0
        self.candidates: list[np.ndarray] = []  # drawn from p_theta, waiting for an update
        self.out = Path(c.output_dir)
        self._stop = False

    # ---- setup ------------------------------------------------------------------------

    def _build_optimizer(self):
        no_decay = ("bias", "LayerNorm.weight")
        params = [
            {
                "params": [
                    p
                    for n, p in self.super_bert.named_parameters()
                    if not any(k in n for k in no_decay)
                ],
                "weight_decay": self.config.weight_decay,
            },
            {
                "params": [
                    p
                    for n, p in self.super_bert.named_parameters()
                    if any(k in n for k in no_decay)
                ],
                "weight_decay": 0.0,
            },
        ]
        optimizer = torch.optim.AdamW(params, lr=1.0)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self._lr_at)
        return optimizer, scheduler

    def _lr_at(self, step: int) -> float:
        """Per phase: linear warm-up to the phase's lr, then linear decay to 0."""
        plan = self.plan_at(min(step, self.total_steps - 1))
        i = step - plan.start
        warm = max(1, round(self.config.warmup_ratio * plan.steps))
        scale = (i + 1) / warm if i < warm else max(0.0, (plan.steps - i) / (plan.steps - warm + 1))
        return plan.phase.lr * scale

    def plan_at(self, step: int) -> PhasePlan:
        for plan in self.plans:
            if plan.start <= step < plan.start + plan.steps:
                return plan
        return self.plans[-1]

    def batch_at(self, step: int) -> dict[str, torch.Tensor]:
        """Pure function of (seed, step, process): resuming replays exactly the same
        batches; under DDP each process takes its own slice of the step's global batch.
        On the CPU (importance reordering moves them where needed)."""
        epoch, k = divmod(step, self.steps_per_epoch)
        order = np.random.default_rng(self.config.seed + 7919 * epoch).permutation(
            len(self.data.train)
        )
        size = self.config.batch_size
        start = (k * self.world + self.accelerator.process_index) * size
        idx = order[start : start + size]
        return to_tensors(trim_padding({key: v[idx] for key, v in self.train_enc.items()}))

    def _on_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.to(self.accelerator.device) for k, v in batch.items()}

    # ---- the loop -------------------------------------------------------------------------

    def train(self, resume: bool = False, stop_at: int | None = None) -> Path:
        """Train to the end (or to ``stop_at``); checkpoints on the way and on SIGTERM."""
        if resume and not (self.out / "checkpoint").is_dir():
            raise TrainError(f"nothing to resume in {self.out} (no checkpoint/)")
        self.out.mkdir(parents=True, exist_ok=True)
        optimizer, scheduler = self._build_optimizer()
        if resume:
            self._load_checkpoint(optimizer, scheduler)
        elif (self.out / "checkpoint").exists():
            raise TrainError(
                f"{self.out} already holds a run: pass --resume to continue it, "
                "or choose another output_dir"
            )
        else:
            (self.out / "config.json").write_text(self.config.model_dump_json(indent=2))
            if self.config.reorder:
                self.super_bert.reorder_by_importance(self._importance_batches())
        model, optimizer, scheduler = self.accelerator.prepare(
            self.super_bert, optimizer, scheduler
        )
        teacher = None
        if self.teacher is not None:  # frozen: on the device, never wrapped in DDP
            teacher = self.accelerator.prepare_model(self.teacher, evaluation_mode=True)
        previous = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, self._on_sigterm)
        try:
            self._loop(model, teacher, optimizer, scheduler, stop_at)
        except KeyboardInterrupt:
            self._save_checkpoint(optimizer, scheduler)
            self.say(f"interrupted at step {self.step}: checkpoint saved; rerun with --resume")
            raise
        finally:
            signal.signal(signal.SIGTERM, previous)
        return self.out

    def _on_sigterm(self, signum, frame) -> None:
        self._stop = True

    def _loop(self, model, teacher, optimizer, scheduler, stop_at):
        c = self.config
        end = self.total_steps if stop_at is None else min(stop_at, self.total_steps)
        started, first = time.monotonic(), self.step
        while self.step < end:
            plan = self.plan_at(self.step)
            batch = self._on_device(self.batch_at(self.step))
            model.train()
            t_out = None
            if teacher is not None:
                with torch.no_grad():
                    inputs = {k: v for k, v in batch.items() if k != "labels"}
                    t_out = teacher(**inputs, output_hidden=True)
            archs = self._sample(plan)
            losses = self._train_step(model, batch, t_out, archs)
            # theta's candidates are scored on this batch before the weights move
            self._maybe_update_theta(model, batch, t_out, plan)
            self.accelerator.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            self.step += 1
            if self.step % c.log_every == 0 or self.step == end:
                rate = (time.monotonic() - started) / max(1, self.step - first)
                self._log(
                    {
                        "kind": "train",
                        "step": self.step,
                        "phase": plan.phase.name,
                        "loss": float(np.mean(losses)),
                        "arch": archs[0].short(),
                        "lr": scheduler.get_last_lr()[0],
                        "exploit_p": self.sng.exploit_probability(),
                        "eta_s": rate * (end - self.step),
                    }
                )
            phase_end = self.step == plan.start + plan.steps
            if phase_end:
                self.evaluate_representatives(plan.phase.name)
            if self.step % c.checkpoint_every == 0 or phase_end or self._stop:
                self._save_checkpoint(optimizer, scheduler)
            if self._stop:
                self.say(f"SIGTERM at step {self.step}: checkpoint saved; rerun with --resume")
                raise Terminated
        if self.step >= self.total_steps:
            self._finish()
        else:  # stopped early on request: leave a checkpoint to resume from
            self._save_checkpoint(optimizer, scheduler)

    def _sample(self, plan: PhasePlan) -> list[Arch]:
        """YOCO: one sub-BERT. Sandwich: the phase's max, its min, then k more. Sampled
        sub-BERTs come from the exploit-explore sampler; those drawn from p_theta wait
        for the next theta update."""
        c = self.config
        fixed = []
        if c.sampling == "sandwich":
            sub_space = self.space_of(plan)
            fixed = [sub_space.max_arch(), sub_space.min_arch()]
        drawn = []
        for _ in range(c.sandwich_random if c.sampling == "sandwich" else 1):
            if c.sng.exploit_explore:
                arch, codes, exploit = self.sng.sample_exploit_explore(plan.sub)
            else:
                (arch, codes), exploit = self.sng.sample(plan.sub, uniform=True), False
            if exploit:
                self.candidates.append(codes)
            drawn.append(arch)
        return fixed + drawn

    def _train_step(self, model, batch, t_out, archs: list[Arch]) -> list[float]:
        """Accumulate the gradients of one step. Sandwich: the max learns from labels and
        the teacher, the others from the max's outputs of this step (or the teacher's),
        and their losses add up (BigNAS); YOCO: the one sub-BERT's loss."""
        c = self.config
        sandwich = c.sampling == "sandwich"
        max_logits, losses = None, []
        for i, arch in enumerate(archs):
            self.super_bert.set_active(arch)
            soft = max_logits if sandwich and i > 0 and c.sandwich_distill == "max" else None
            loss, logits = self._loss(model, batch, t_out, arch, soft)
            if sandwich and i == 0:
                max_logits = logits.detach()
            self.accelerator.backward(loss if sandwich else loss / len(archs))
            losses.append(float(loss.detach()))
        return losses

    def space_of(self, plan: PhasePlan):
        from dataclasses import replace

        s = self.space
        return replace(
            s,
            depth_choices=tuple(s.depth_choices[i] for i in plan.sub.allowed[0]),
            head_choices=tuple(sorted({s.cells[i][0] for i in plan.sub.allowed[1]})),
            ffn_choices=tuple(sorted({s.cells[i][1] for i in plan.sub.allowed[1]})),
        )

    def _loss(self, model, batch, t_out, arch: Arch, soft=None):
        """(loss, logits) of the active sub-BERT. ``soft``: in-place distillation
        targets, used alone (no labels, as in BigNAS)."""
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        kd, num_labels = self.config.kd, self.data.task.num_labels
        use_hidden = kd.hidden_mse > 0 and t_out is not None
        if use_hidden:
            logits, hidden = model(**inputs, output_hidden=True)
            sources = [0] + [k + 1 for k in self.space.kept_layers(arch.depth)]
            t_hidden = [t_out[1][j] for j in sources]
        else:
            logits, hidden, t_hidden = model(**inputs), None, None
        if soft is not None:
            return soft_loss(logits, soft, kd.temperature, num_labels), logits
        t_logits = t_out[0] if t_out is not None else None
        loss = distill_loss(logits, t_logits, batch["labels"], kd, num_labels, hidden, t_hidden)
        return loss, logits

    def _maybe_update_theta(self, model, batch, t_out, plan: PhasePlan) -> None:
        """Once lambda sub-BERTs drawn from p_theta are in hand: score them together on
        this batch (eval mode, no gradient) and take one SNG step."""
        lam = self.config.sng.lam
        if len(self.candidates) < lam:
            return
        chosen, self.candidates = self.candidates[:lam], self.candidates[lam:]
        model.eval()
        losses = []
        with torch.no_grad():
            for codes in chosen:
                arch = self.space.decode(codes)
                self.super_bert.set_active(arch)
                loss = self._loss(model, batch, t_out, arch)[0].detach()
                # every process must take the same theta step: rank on the global batch
                losses.append(float(self.accelerator.reduce(loss, "mean")))
        model.train()
        self.sng.update(chosen, losses, plan.sub)

    # ---- evaluation -----------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self, arch: Arch, split: str = "dev") -> Evaluation:
        """The sub-BERT's metric and loss on dev (capped by ``max_eval``) or the search split."""
        if split == "dev":
            enc = sorted_by_length(self.dev_enc, self.config.max_eval)
        else:
            enc = sorted_by_length(
                encode(self.tokenizer, self.data.search, self.config.max_seq_len)
            )
        self.super_bert.set_active(arch)
        self.super_bert.eval()

        def predict(part):
            return self.super_bert(**self._on_device(to_tensors(part))).float().cpu().numpy()

        return evaluate(predict, enc, self.data.task, self.config.eval_batch_size)

    def evaluate_representatives(self, phase: str) -> list[dict[str, Any]]:
        rows = []
        for name, arch in representative_archs(self.space).items():
            result = self.evaluate(arch)
            flops = arch_costs(arch, self.space.dims, self.config.max_seq_len).flops
            row = {
                "kind": "eval",
                "step": self.step,
                "phase": phase,
                "name": name,
                "arch": arch.to_dict(),
                "flops": flops,
                **result.metrics,
                "loss": result.loss,
            }
            self._log(row)
            rows.append(row)
        return rows

    # ---- logs, checkpoints, results ---------------------------------------------------------

    def _log(self, row: dict[str, Any]) -> None:
        if not self.accelerator.is_main_process:
            return
        with open(self.out / "log.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        if row["kind"] == "train":
            self.say(
                f"step {row['step']}/{self.total_steps} [{row['phase']}] "
                f"loss {row['loss']:.4f} lr {row['lr']:.2e} ETA {row['eta_s'] / 60:.1f} min"
            )
        else:
            metric = self.data.task.metric if self.data.task.metric in row else "accuracy"
            self.say(f"eval [{row['phase']}] {row['name']}: {metric} {row.get(metric, 0):.4f}")

    def _save_checkpoint(self, optimizer, scheduler) -> None:
        from safetensors.torch import save_file

        if not self.accelerator.is_main_process:
            return
        tmp = self.out / "checkpoint.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        state = {
            k: v.detach().cpu().contiguous()
            for k, v in self.accelerator.unwrap_model(self.super_bert).model.state_dict().items()
        }
        save_file(state, tmp / "model.safetensors")
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        torch.save({"torch": torch.get_rng_state()}, tmp / "rng.pt")
        meta = {
            "step": self.step,
            "sng": self.sng.state_dict(),
            "python_rng": repr(self.rng.getstate()),
            "candidates": [c.tolist() for c in self.candidates],
            "config": self.config.model_dump(mode="json"),
        }
        (tmp / "state.json").write_text(json.dumps(meta))
        final = self.out / "checkpoint"
        old = self.out / "checkpoint.old"
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)

    def _load_checkpoint(self, optimizer, scheduler) -> None:
        from safetensors.torch import load_file

        ckpt = self.out / "checkpoint"
        if not ckpt.exists() and (self.out / "checkpoint.old").exists():
            ckpt = self.out / "checkpoint.old"  # interrupted while replacing the checkpoint
        if not ckpt.exists():
            raise TrainError(f"nothing to resume in {self.out} (no checkpoint/)")
        meta = json.loads((ckpt / "state.json").read_text())
        saved = meta["config"]
        if {k: v for k, v in saved.items() if k != "output_dir"} != {
            k: v for k, v in self.config.model_dump(mode="json").items() if k != "output_dir"
        }:
            raise TrainError(
                f"{self.out} was started with another config; resume with the same config file"
            )
        self.super_bert.model.load_state_dict(load_file(ckpt / "model.safetensors"))
        optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", weights_only=True))
        scheduler.load_state_dict(torch.load(ckpt / "scheduler.pt", weights_only=True))
        torch.set_rng_state(torch.load(ckpt / "rng.pt", weights_only=True)["torch"])
        self.sng.load_state_dict(meta["sng"])
        import ast

        self.rng.setstate(ast.literal_eval(meta["python_rng"]))
        self.candidates = [np.asarray(c) for c in meta["candidates"]]
        self.step = meta["step"]
        self._trim_log(self.step)
        self.say(f"resumed at step {self.step}/{self.total_steps}")

    def _trim_log(self, step: int) -> None:
        """Drop log rows written after the checkpoint: the resumed run writes them again."""
        from yoco_deploy.util.atomic import write_text

        path = self.out / "log.jsonl"
        if not path.exists() or not self.accelerator.is_main_process:
            return
        lines = path.read_text().splitlines()
        kept = [line for line in lines if json.loads(line).get("step", 0) <= step]
        if len(kept) < len(lines):
            write_text(path, "".join(line + "\n" for line in kept))

    def _importance_batches(self, n_batches: int = 4):
        for step in range(n_batches):
            yield self.batch_at(step)

    def _finish(self) -> None:
        """The final super-BERT: a plain BERT checkpoint plus yoco_supernet.json (space,
        theta, task): usable as --model by export, search and ship."""
        if not self.accelerator.is_main_process:
            return
        from yoco_deploy.util.atomic import staged_dir

        final = self.out / "final"
        model = self.accelerator.unwrap_model(self.super_bert)
        record = SupernetCheckpoint(
            task=self.data.task.name,
            space=self.space.to_dict(),
            sng=self.sng.state_dict(),
            steps=self.step,
            config=self.config.model_dump(mode="json"),
        )
        with staged_dir(final) as stage:  # final/ appears complete or not at all
            model.model.save_pretrained(stage)
            self.tokenizer.save_pretrained(stage)
            record.write(stage)
        rows = self.evaluate_representatives("final")
        plot_metric_vs_flops(rows, self.out / "metric_vs_flops.png", self.data.task.metric)
        self.say(f"final super-BERT in {final}")
