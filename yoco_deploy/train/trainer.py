"""YOCO stage I: train the super-BERT in progressive phases so that every sub-BERT is
good without retraining, while p_theta (SNG) learns which sub-BERTs to train."""

from __future__ import annotations

import ast
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from yoco_deploy.arch import Arch
from yoco_deploy.costs import arch_costs
from yoco_deploy.errors import Terminated
from yoco_deploy.model.super_bert import SuperBert
from yoco_deploy.model.supernet_checkpoint import SupernetCheckpoint
from yoco_deploy.plots import plot_metric_vs_flops
from yoco_deploy.train.config import TrainConfig
from yoco_deploy.train.data import (
    TaskData,
    encode,
    load_task_as_configured,
    to_tensors,
    trim_padding,
)
from yoco_deploy.train.distill import distill_loss, soft_loss
from yoco_deploy.train.evaluation import Evaluation, evaluate, sorted_by_length
from yoco_deploy.train.optimizer import build_optimizer
from yoco_deploy.train.phases import (
    PhasePlan,
    phase_space,
    plan_at,
    plan_phases,
    representative_archs,
)
from yoco_deploy.train.resume import TrainError, load_checkpoint, save_checkpoint
from yoco_deploy.train.run_log import RunLog
from yoco_deploy.train.sng import CategoricalSNG


class Trainer:
    """Progressive phases (heads, then FFN, then depth) of YOCO or sandwich steps, through
    accelerate (CPU, one or many GPUs, mixed precision). Sub-BERTs come from p_theta with
    probability rho/rho_max, else uniformly from the phase's sub-space."""

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
        self.data = data or load_task_as_configured(c.task, c.data_dir, c.model_dump())
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
        # one sub-BERT trained alone (polish, the distilled-alone baseline), else sampled
        self.alone = None if c.arch is None else self.space.validate(Arch.from_dict(c.arch))
        self.train_enc = encode(self.tokenizer, self.data.train, c.max_seq_len)
        self.dev_enc = encode(self.tokenizer, self.data.dev, c.max_seq_len)
        # batch_size is per process: a step consumes batch_size x processes examples.
        self.world = self.accelerator.num_processes
        self.steps_per_epoch = max(1, len(self.data.train) // (c.batch_size * self.world))
        self.plans = plan_phases(c, self.space, self.steps_per_epoch)
        self._evaluated: tuple[int, list[dict[str, Any]]] = (-1, [])  # (step, rows)
        self.total_steps = sum(p.steps for p in self.plans)
        self.sng = CategoricalSNG(self.space, c.sng.delta, c.sng.lam, c.seed)
        self.rng = random.Random(c.seed)
        self.step = 0
        self.train_s = 0.0  # seconds in training steps (evaluations and checkpoints not counted)
        self.candidates: list[np.ndarray] = []  # drawn from p_theta, waiting for an update
        self.out = Path(c.output_dir)
        self.run_log = RunLog(self.out / "log.jsonl", self.total_steps, task.metric, log)
        self._stop = False

    # ---- batches ----------------------------------------------------------------------

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
        c = self.config
        optimizer, scheduler = build_optimizer(
            self.super_bert, c.weight_decay, self.plans, c.warmup_ratio
        )
        if resume:
            self._load_checkpoint(optimizer, scheduler)
        elif (self.out / "checkpoint").exists():
            raise TrainError(
                f"{self.out} already holds a run: pass --resume to continue it, "
                "or choose another output_dir"
            )
        else:
            (self.out / "config.json").write_text(c.model_dump_json(indent=2))
            if c.reorder:
                self.super_bert.reorder_by_importance(self.batch_at(step) for step in range(4))
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
            step_started = time.monotonic()
            plan = plan_at(self.plans, self.step)
            batch = self._on_device(self.batch_at(self.step))
            model.train()
            t_out = None
            if teacher is not None:
                with torch.no_grad():
                    inputs = {k: v for k, v in batch.items() if k != "labels"}
                    t_out = teacher(**inputs, output_hidden=True)
            archs = self._sample(plan)
            losses = self.train_step(model, batch, t_out, archs)
            # theta's candidates are scored on this batch before the weights move
            self._maybe_update_theta(model, batch, t_out, plan)
            self.accelerator.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            self.step += 1
            self.train_s += time.monotonic() - step_started
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
                        "train_s": round(self.train_s, 3),
                    }
                )
            phase_end = self.step == plan.start + plan.steps
            if phase_end or (c.eval_every and self.step % c.eval_every == 0):
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
        if self.alone is not None:
            return [self.alone]
        fixed = []
        if c.sampling == "sandwich":
            sub_space = phase_space(self.space, plan)
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

    def train_step(self, model, batch, t_out, archs: list[Arch]) -> list[float]:
        """Accumulate the gradients of one step. Sandwich: the max learns from labels and
        the teacher, the others from the max's outputs of this step (or the teacher's),
        and their losses add up (BigNAS); YOCO: the one sub-BERT's loss."""
        c = self.config
        sandwich = c.sampling == "sandwich"
        max_logits, losses = None, []
        for i, arch in enumerate(archs):
            self.super_bert.set_active(arch)
            soft = max_logits if sandwich and i > 0 and c.sandwich_distill == "max" else None
            loss, logits = self.step_loss(model, batch, t_out, arch, soft)
            if sandwich and i == 0:
                max_logits = logits.detach()
            self.accelerator.backward(loss if sandwich else loss / len(archs))
            losses.append(float(loss.detach()))
        return losses

    def step_loss(self, model, batch, t_out, arch: Arch, soft=None):
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
                loss = self.step_loss(model, batch, t_out, arch)[0].detach()
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
        step, rows = self._evaluated
        if step != self.step:  # else: no step since the last phase's, the same scores
            archs = representative_archs(self.space, self.plans)
            archs = {"alone": self.alone} if self.alone is not None else archs
            rows = [self._eval_row(name, arch) for name, arch in archs.items()]
        rows = [{**row, "phase": phase} for row in rows]
        for row in rows:
            self._log(row)
        self._evaluated = (self.step, rows)
        return rows

    def _eval_row(self, name: str, arch: Arch) -> dict[str, Any]:
        result = self.evaluate(arch)
        return {
            "kind": "eval", "step": self.step, "name": name, "arch": arch.to_dict(),
            "flops": arch_costs(arch, self.space.dims, self.config.max_seq_len).flops,
            **result.metrics, "loss": result.loss, "train_s": round(self.train_s, 3),
        }  # fmt: skip

    # ---- logs, checkpoints, results ---------------------------------------------------------

    def _log(self, row: dict[str, Any]) -> None:
        if self.accelerator.is_main_process:
            self.run_log.write(row)

    def _save_checkpoint(self, optimizer, scheduler) -> None:
        if not self.accelerator.is_main_process:
            return
        state = {
            "step": self.step,
            "sng": self.sng.state_dict(),
            "python_rng": repr(self.rng.getstate()),
            "candidates": [c.tolist() for c in self.candidates],
            "train_s": self.train_s,
        }
        model = self.accelerator.unwrap_model(self.super_bert).model
        save_checkpoint(self.out, model, optimizer, scheduler, self.config, state)

    def _load_checkpoint(self, optimizer, scheduler) -> None:
        state = load_checkpoint(self.out, self.super_bert.model, optimizer, scheduler, self.config)
        self.sng.load_state_dict(state["sng"])
        self.rng.setstate(ast.literal_eval(state["python_rng"]))
        self.candidates = [np.asarray(c) for c in state["candidates"]]
        self.step = state["step"]
        self.train_s = state.get("train_s", 0.0)
        if self.accelerator.is_main_process:
            self.run_log.trim(self.step)
        self.say(f"resumed at step {self.step}/{self.total_steps}")

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
