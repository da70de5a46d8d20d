"""Compress once, or distil each budget alone? SST-2, MiniLM, K = 4 latency budgets.

    .venv/bin/python bench/compress_once.py [--runs runs] [--seeds 3] [--polish 300]

Rows, per budget (35%, 45%, 55%, 80% of the max sub-BERT's latency, resolved as
bench/search.py does: shares of its calibrated prediction on the committed predictor):

- once: the super-BERT of bench/train_sst2.py (wall time T), then search and ship at
  the budget (DeployJob, as `yoco-deploy search` does); the shipped bundle's dev metric.
- alone: the architecture that shipped, cut from the teacher (importance order, the
  same pooling and layer selection) and distilled alone with the super-BERT's loss and
  data for the steps that fit T/K on this machine, evaluated along the way (a curve);
  one row per seed (the data order). Seed 0 then continues to T/2 (row alone-long),
  and to T while it still climbs.
- polish: the shipped sub-BERT distilled alone from the teacher for --polish steps,
  starting from the super-BERT's weights (`ship --polish`), one row per seed.

Every dev metric that is compared is the int8 ONNX model's, measured as ship measures
it (ONNX Runtime, all 872 dev sentences); the curves are the PyTorch model's.

Resumable: one JSON row per finished run is appended to bench/results/compress_once.jsonl,
keyed by the super-BERT's weights digest (a row of another super-BERT is never reused);
runs resume from their checkpoints. Work goes budget by budget within each stage (once,
polish, alone, long), so partial results cover every budget. Writes
bench/results/compress_once.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _common import RESULTS, ROOT, save_figure

SUPER = "sst2-minilm-super"  # bench/train_sst2.py's super-BERT run
# the super-BERTs bench/train_sst2.py trains when missing, and how
SUPERS = {SUPER: [], "sst2-minilm-super-first": ["--layer-selection", "first"]}
DEVICE = "x86-2c-ort-cpu-minilm"
SHARES = (0.35, 0.45, 0.55, 0.80)
LATENCY_SEQ = 128  # latency budgeted and bundles timed and scored at 128 (bench/search.py)
LR = 3e-5  # the super-BERT recipe's
EVALS_PER_RUN = 6  # points on each distilled-alone curve
CLIMBING = 0.003  # the long run goes on to T while its last half gained more than this


class Bench:
    """The benchmark's state: the trained models, T, and the log of finished runs."""

    def __init__(self, args):
        from yoco_deploy.deploy.supernet import load_supernet
        from yoco_deploy.util.hashing import file_sha256

        self.args = args
        self.runs = Path(args.runs)
        self.teacher = self.runs / "sst2-minilm-teacher" / "final"
        super_run = self.runs / args.super
        self.super_dir = super_run / "final"
        if not self.super_dir.is_dir() and args.super in SUPERS:
            report = self.runs / f"{args.super}.json"
            train = [sys.executable, str(ROOT / "bench/train_sst2.py"), "--runs", str(self.runs),
                     "--out", str(report), *SUPERS[args.super]]  # fmt: skip
            subprocess.run(train, check=True)
        self.key = file_sha256(self.super_dir / "model.safetensors")[:16]
        self.super_run = super_run
        self.net = load_supernet(str(self.super_dir))
        self.config = dict(self.net.record.config)
        # one work folder per super-BERT: a search log is never replayed for another
        self.work = self.runs / (
            "compress-once" if args.super == SUPER else f"compress-once-{args.super}"
        )
        self.log = Path(args.log)
        self.done = {}
        if self.log.exists():
            for row in map(json.loads, self.log.read_text().splitlines()):
                if row["super_bert"] == self.key:
                    self.done[_key(row)] = row
        self.T = self.super_seconds()

    def record(self, row: dict) -> dict:
        from _common import machine_info

        machine = machine_info()
        row = {**row, "super_bert": self.key, "cpu": machine.get("cpu"), "t": time.time()}
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("a") as f:
            f.write(json.dumps(row) + "\n")
        self.done[_key(row)] = row
        print(json.dumps({k: row[k] for k in ("row", "share", "seed", "dev") if k in row}))
        return row

    # ---- the rows ---------------------------------------------------------------------

    def once(self, share: float) -> dict:
        """Search and ship at the budget, as a user would (`yoco-deploy search`)."""
        from yoco_deploy.deploy.budgets import parse_target
        from yoco_deploy.deploy.per_target import DeployJob
        from yoco_deploy.deploy.search import SearchSettings
        from yoco_deploy.deploy.ship import ShipSettings

        if (k := ("once", share, 0)) in self.done:
            return self.done[k]
        target = parse_target(f"{DEVICE}:latency={share * 100:g}%")
        job = DeployJob(
            targets=(target,),
            search=SearchSettings(evaluations=100, seed=0),
            ship=ShipSettings.from_options("int8", LATENCY_SEQ, 1),
            predictors=ROOT / "predictors",
            logs=self.work / "search",
            bundles=self.work / "bundles",
            calibrate=True,
        )
        started = time.time()
        (cm,) = job.cost_models(self.net)
        result = job.run_search(self.net, cm)
        searched = time.time()
        shipped = job.run_ship(self.net, cm, [c.arch for c in result.ranked])
        m = shipped.manifest
        max_ms = cm.costs(self.net.super_bert.space.max_arch())["latency"]
        return self.record({
            "row": "once", "share": share, "seed": 0, "arch": m.arch, "arch_id": m.arch_id,
            "bundle": str(shipped.path), "dev": m.metric["value"],
            "dev_fp32": self._fp32_dev(self.net.super_bert, m.arch),
            "latency_share": m.predicted_ms / max_ms if m.predicted_ms else None,
            "measured_ms": m.measured_latency_ms.median, "budget_ms": m.budget_ms,
            "search_s": searched - started, "ship_s": time.time() - searched,
        })  # fmt: skip

    def polish(self, share: float, seed: int) -> dict:
        from yoco_deploy.arch import Arch
        from yoco_deploy.deploy.polish import PolishSpec, polish
        from yoco_deploy.deploy.supernet import SuperBertEvaluator

        if (k := ("polish", share, seed)) in self.done:
            return self.done[k]
        once = self.once(share)
        arch = Arch.from_dict(once["arch"])
        spec = PolishSpec(steps=self.args.polish, seed=seed)
        work = self.work / "polish" / f"{share:g}"
        done = polish(self.net, arch, spec, work, SuperBertEvaluator(self.net))
        polished = done.super_bert if done.kept else _load(self.net, done.run / "final")
        return self.record({
            "row": "polish", "share": share, "seed": seed, "arch_id": arch.arch_id,
            "steps": spec.steps, "wall_s": done.record["wall_s"],
            "search_before": done.record["before"], "search_after": done.record["after"],
            "kept": done.kept, "dev_polished": self._onnx_dev(polished, arch),
            "dev": self._onnx_dev(done.super_bert, arch),  # what ship would ship
        })  # fmt: skip

    def alone(self, share: float, seed: int) -> dict:
        """The shipped architecture cut from the teacher and distilled alone for T/K."""
        if (k := ("alone", share, seed)) in self.done:
            return self.done[k]
        once = self.once(share)
        steps = self._steps_for(share, self.T / len(self.args.shares))
        out = self.work / "alone" / f"{share:g}" / f"seed{seed}"
        final = self._train(once["arch"], str(self.teacher), True, seed, steps, out)
        return self.record({
            "row": "alone", "share": share, "seed": seed, "arch_id": once["arch_id"],
            "steps": steps, **self._outcome(final, once["arch"], out),
        })  # fmt: skip

    def long(self, share: float) -> dict:
        """Seed 0's distilled-alone model, trained on from T/K to T/2 (to T while it climbs)."""
        first = self.alone(share, 0)
        row = self.done.get(("alone-long", share, 0))
        if row is None:
            row = self._continue(share, first, self.T / 2, "alone-long")
        curve = row["curve"]
        climbing = len(curve) > 2 and curve[-1][1] - curve[len(curve) // 2][1] > CLIMBING
        if climbing and ("alone-longest", share, 0) not in self.done:
            return self._continue(share, row, self.T, "alone-longest")
        return row

    def super_seconds(self) -> float:
        """T: the super-BERT's training time on this machine, as its steps at each phase's
        step rate (probed on a quiet machine, so a busy spell during the hour-long
        training does not stretch it), times the run's measured share of evaluations and
        checkpoints (wall time over training-step time, both from the same run)."""
        from yoco_deploy.train.config import parse_config
        from yoco_deploy.train.phases import plan_phases
        from yoco_deploy.train.probe import seconds_per_step

        if (k := ("probe-super", 0, 0)) not in self.done:
            config = parse_config({**self.config, "output_dir": str(self.work / "probe")})
            per_epoch = max(1, len(self.net.data.train) // config.batch_size)
            plans = plan_phases(config, self.net.super_bert.space, per_epoch)
            rates = [
                seconds_per_step(config.model_copy(update={"phases": [plan.phase]}),
                                 self.net.data, self.net.tokenizer, steps=20)
                for plan in plans
            ]  # fmt: skip
            train_s = sum(plan.steps * rate for plan, rate in zip(plans, rates, strict=True))
            logged = [json.loads(line) for line in (self.super_run / "log.jsonl").open()]
            trained = [r["train_s"] for r in logged if r["kind"] == "train" and "train_s" in r]
            wall = _run_wall_s(self.super_run)
            overhead = wall / trained[-1] if trained else 1.0
            self.record({"row": "probe-super", "share": 0, "seed": 0, "seconds_per_step": rates,
                         "steps": [p.steps for p in plans], "train_s_probed": train_s,
                         "train_s_logged": trained[-1] if trained else None, "wall_s": wall,
                         "overhead": overhead, "T": train_s * overhead})  # fmt: skip
        return self.done[k]["T"]

    def teacher_dev(self) -> dict:
        """The teacher's dev accuracy, fp32 and as an int8 ONNX model (a row, once)."""
        if (k := ("teacher", 0, 0)) not in self.done:
            teacher = _load(self.net, self.teacher)
            arch = self.net.super_bert.space.max_arch()
            self.record({"row": "teacher", "share": 0, "seed": 0,
                         "dev_fp32": self._fp32_dev(teacher, arch),
                         "dev": self._onnx_dev(teacher, arch)})  # fmt: skip
        return _pick(self.done[k], ["dev", "dev_fp32"])

    # ---- helpers ----------------------------------------------------------------------

    def _continue(self, share: float, previous: dict, until_s: float, name: str) -> dict:
        once = self.once(share)
        # compute so far as its steps at the quiet step rate, as every row counts it (its
        # logged seconds stretch on a busy machine)
        done_s = previous["steps_total"] * self.done[("probe", share, 0)]["seconds_per_step"]
        steps = self._steps_for(share, until_s - done_s)
        out = self.work / name / f"{share:g}"
        start = Path(previous["final"])
        final = self._train(once["arch"], str(start), False, 0, steps, out)
        outcome = self._outcome(
            final, once["arch"], out, previous["train_s_total"], previous["steps_total"]
        )
        return self.record({
            "row": name, "share": share, "seed": 0, "arch_id": once["arch_id"],
            "steps": previous["steps_total"] + steps, **outcome,
            "train_s_total": outcome["train_s"] + previous["train_s_total"],
            "steps_total": previous["steps_total"] + steps,
            "curve": previous["curve"] + outcome["curve"],
        })  # fmt: skip

    def _steps_for(self, share: float, seconds: float) -> int:
        """Steps of the distilled-alone run that fit ``seconds`` on the machine that
        trained the super-BERT (probed once per budget, kept in the log, so a later
        session on another CPU trains the same number of steps)."""
        from yoco_deploy.train.config import parse_config
        from yoco_deploy.train.probe import seconds_per_step

        k = ("probe", share, 0)
        if k not in self.done:
            once = self.once(share)
            config = parse_config(self._settings(once["arch"], str(self.teacher), True, 0, 100,
                                                 self.work / "probe"), "alone")  # fmt: skip
            rate = seconds_per_step(config, self.net.data, self.net.tokenizer, steps=10)
            self.record({"row": "probe", "share": share, "seed": 0, "seconds_per_step": rate})
        return max(1, round(seconds / self.done[k]["seconds_per_step"]))

    def _settings(self, arch, model, reorder, seed, steps, out) -> dict:
        per_epoch = max(1, len(self.net.data.train) // self.config.get("batch_size", 32))
        from yoco_deploy.train.data import split_seed_of

        return {
            **self.config, "model": model, "teacher": str(self.teacher), "output_dir": str(out),
            "arch": arch, "reorder": reorder, "seed": seed,
            "split_seed": split_seed_of(self.config),
            "eval_every": max(1, steps // EVALS_PER_RUN), "checkpoint_every": 200,
            "phases": [{"name": "alone", "epochs": steps / per_epoch, "lr": LR}],
        }  # fmt: skip

    def _train(self, arch, model, reorder, seed, steps, out: Path) -> Path:
        from yoco_deploy.train.config import parse_config
        from yoco_deploy.train.trainer import Trainer

        if not (out / "final").is_dir():
            config = parse_config(self._settings(arch, model, reorder, seed, steps, out), "alone")
            trainer = Trainer(config, self.net.data, self.net.tokenizer)
            trainer.train(resume=(out / "checkpoint").is_dir())
        return out / "final"

    def _outcome(self, final: Path, arch: dict, out: Path, offset_s=0.0, offset_steps=0) -> dict:
        """The run's result; its curve's points are [train_s, accuracy, step] from the
        start of the first run it continues."""
        from yoco_deploy.arch import Arch

        rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
        evals = [r for r in rows if r["kind"] == "eval" and r["phase"] != "final"]
        trained = [r for r in rows if r["kind"] == "train"]
        model = _load(self.net, final)
        return {
            "final": str(final),
            "train_s": trained[-1]["train_s"],
            "train_s_total": trained[-1]["train_s"] + offset_s,
            "steps_total": trained[-1]["step"],
            "wall_s": _run_wall_s(out),
            "curve": [
                [r["train_s"] + offset_s, r["accuracy"], r["step"] + offset_steps] for r in evals
            ],
            "dev_fp32": self._fp32_dev(model, arch),
            "dev": self._onnx_dev(model, Arch.from_dict(arch)),
        }

    def _fp32_dev(self, super_bert, arch) -> float:
        import torch

        from yoco_deploy.arch import Arch
        from yoco_deploy.train.data import encode, to_tensors
        from yoco_deploy.train.evaluation import evaluate, sorted_by_length

        super_bert.eval()
        super_bert.set_active(Arch.from_dict(arch) if isinstance(arch, dict) else arch)
        # the training length, as the curves' evaluations are made at
        enc = sorted_by_length(encode(self.net.tokenizer, self.net.data.dev, self.net.max_seq_len))

        def predict(part):
            with torch.no_grad():
                return super_bert(**to_tensors(part)).numpy()

        return evaluate(predict, enc, self.net.data.task).metrics["accuracy"]

    def _onnx_dev(self, super_bert, arch) -> float:
        """Dev accuracy of the int8 ONNX model, as ship scores a bundle."""
        import tempfile

        from yoco_deploy.deploy.quality import onnx_metric
        from yoco_deploy.deploy.ship import DEFAULT_SESSION
        from yoco_deploy.export.sub_bert import ExportOptions, export_sub_bert

        options = ExportOptions.for_format("int8", save_model_dir=False)
        with tempfile.TemporaryDirectory(prefix="compress-once-") as tmp:
            report = export_sub_bert(super_bert, arch, Path(tmp) / "m", options,
                                     self.net.tokenizer, LATENCY_SEQ, 1)  # fmt: skip
            metric = onnx_metric(report.deploy_file, self.net.data, self.net.tokenizer,
                                 LATENCY_SEQ, DEFAULT_SESSION)  # fmt: skip
        return metric["value"]


def _key(row: dict) -> tuple:
    return (row["row"], row["share"], row.get("seed", 0))


def _load(net, folder: Path):
    from yoco_deploy.model.super_bert import SuperBert

    return SuperBert.from_pretrained(
        str(folder), net.data.task.num_labels, net.record.config.get("space"),
        label_names=net.data.task.label_names,
    ).eval()  # fmt: skip


def _run_wall_s(run: Path) -> float:
    """From the run's start (config.json) to its end (final/)."""
    return (run / "final").stat().st_mtime - (run / "config.json").stat().st_mtime


# ---- results ----------------------------------------------------------------------------


def summarize(bench: Bench) -> dict:
    """Per budget and row: arch, latency share, dev (mean, 95% CI, per seed), wall time;
    the compress-once ratio from the measured curves."""
    rows = list(bench.done.values())
    T, K = bench.T, len(bench.args.shares)
    probe = bench.done[("probe-super", 0, 0)]
    command = " ".join(["bench/compress_once.py", *sys.argv[1:]])
    out = {"benchmark": "compress_once", "command": command, "T_s": T, "K": K,
           "T_wall_s": probe["wall_s"], "T_probe": probe,
           "super_bert": bench.key, "budgets": []}  # fmt: skip
    for share in bench.args.shares:
        mine = [r for r in rows if r["share"] == share]
        once = next((r for r in mine if r["row"] == "once"), None)
        entry = {"share": share, "once": once and _pick(once, ["arch", "arch_id", "dev",
                 "dev_fp32", "latency_share", "measured_ms", "budget_ms", "search_s",
                 "ship_s"])}  # fmt: skip
        probe = next((r for r in mine if r["row"] == "probe"), None)
        rate = entry["seconds_per_step"] = probe and probe["seconds_per_step"]
        for name in ("alone", "polish"):  # one sub-BERT, teacher and loss: the same step
            seeds = sorted((r for r in mine if r["row"] == name), key=lambda r: r["seed"])
            entry[name] = _stats([r["dev"] for r in seeds]) | {
                "seeds": [r["seed"] for r in seeds],
                "steps": [r.get("steps") for r in seeds],
                "wall_s": [r["steps"] * rate if rate else None for r in seeds],
                "logged_s": [r.get("train_s", r.get("wall_s")) for r in seeds],
            }
        longest = [r for r in mine if r["row"] in ("alone-long", "alone-longest")]
        alone = [r for r in mine if r["row"] == "alone"]
        entry["alone_curves"] = {f"seed{r['seed']}": r["curve"] for r in alone}
        if longest:
            last = longest[-1]
            entry["alone_long"] = {"curve": last["curve"], "dev": last["dev"],
                                   "train_s": last["steps_total"] * rate}  # fmt: skip
        entry["time_to_match_s"] = _time_to_match(entry, once) if probe else None
        out["budgets"].append(entry)
    out["ratio"] = _ratio(out, bench)
    return out


def _pick(row: dict, keys: list[str]) -> dict:
    return {k: row.get(k) for k in keys}


def _stats(values: list[float]) -> dict:
    if not values:
        return {"mean": None, "ci95": None, "per_seed": []}
    mean = float(np.mean(values))
    if len(values) < 2:
        return {"mean": mean, "ci95": None, "per_seed": values}
    from scipy import stats

    half = stats.t.ppf(0.975, len(values) - 1) * np.std(values, ddof=1) / math.sqrt(len(values))
    return {"mean": mean, "ci95": [mean - half, mean + half], "per_seed": values}


def _time_to_match(entry: dict, once: dict | None) -> dict | None:
    """Per seed, the training seconds its distilled-alone curve needs to reach the
    compressed-once fp32 dev accuracy (linear between evaluations, from chance at step 0;
    seed 0 on its longest curve), and their mean. A curve that never gets there counts
    its whole length, so the mean is then a lower bound (``lower_bound``). Seconds are
    steps at the probed step rate, so a busy machine during a run does not stretch them."""
    if once is None:
        return None
    curves = dict(entry["alone_curves"])
    if entry.get("alone_long"):
        curves["seed0"] = entry["alone_long"]["curve"]
    rate, per_seed, short = entry["seconds_per_step"], {}, []
    for name, curve in sorted(curves.items()):
        if not curve:
            continue
        reached = _crossing(curve, once["dev_fp32"], rate)
        if reached is None:
            short.append(name)
            reached = curve[-1][2] * rate
        per_seed[name] = reached
    if not per_seed:
        return None
    return {"mean_s": float(np.mean(list(per_seed.values()))), "per_seed_s": per_seed,
            "lower_bound": bool(short), "not_reached": short}  # fmt: skip


def _crossing(curve: list, goal: float, rate: float) -> float | None:
    """Where a dev curve (points [train_s, accuracy, step]) first reaches ``goal``."""
    prev = (0.0, 0.5)
    for point in curve:
        t, acc = point[2] * rate, point[1]
        if acc >= goal:
            (t0, a0) = prev
            return t0 + max(0.0, goal - a0) / max(acc - a0, 1e-9) * (t - t0)
        prev = (t, acc)
    return None


def _ratio(out: dict, bench: Bench) -> dict:
    """K separate distillations' time to match (the mean over seeds), over T plus the K
    searches and ships; a lower bound where some seed's curve never matched."""
    matched = [b["time_to_match_s"] for b in out["budgets"]]
    searches = [b["once"]["search_s"] + b["once"]["ship_s"] for b in out["budgets"] if b["once"]]
    if not searches or any(m is None for m in matched):
        return {"complete": False, "why": "a budget's curve or its compressed-once row is missing"}
    per_budget = float(np.mean([m["mean_s"] for m in matched]))
    per_search = float(np.mean(searches))
    ratio = lambda k: k * per_budget / (bench.T + k * per_search)  # noqa: E731
    return {"complete": True, "measured": ratio(len(matched)),
            "by_K": {k: ratio(k) for k in (1, 2, 4, 8, 16)},
            "lower_bound": any(m["lower_bound"] for m in matched),
            "seeds": sorted({s for m in matched for s in m["per_seed_s"]}),
            "alone_s_per_budget": per_budget, "search_ship_s_per_budget": per_search}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=ROOT / "runs")
    parser.add_argument(
        "--super", default=SUPER,
        help="The super-BERT's run folder under --runs (default: bench/train_sst2.py's, "
        "trained first if missing; sst2-minilm-super-first: the same with the first L "
        "layers, trained first if missing).",
    )  # fmt: skip
    parser.add_argument("--shares", type=float, nargs="+", default=list(SHARES))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--polish", type=int, default=300, help="Polish steps.")
    parser.add_argument("--log", type=Path, default=RESULTS / "compress_once.jsonl")
    parser.add_argument("--out", type=Path, default=RESULTS / "compress_once.json")
    parser.add_argument(
        "--stages", nargs="+", default=["once", "probe", "polish", "alone", "long"],
        help="Which rows to run (each budget by budget, in this order; 'probe' times each "
        "budget's step rate, right after 'once', so every timed part runs in the first "
        "half hour, which needs a quiet machine); the results are written from whatever "
        "the log holds.",
    )  # fmt: skip
    parser.add_argument("--report-only", action="store_true", help="Write the results only.")
    args = parser.parse_args(argv)
    bench = Bench(args)
    if not args.report_only:
        plan = {
            "once": lambda: [bench.once(s) for s in args.shares],
            "probe": lambda: [bench._steps_for(s, 0.0) for s in args.shares],
            "polish": lambda: [bench.polish(s, k) for k in range(args.seeds) for s in args.shares],
            "alone": lambda: [bench.alone(s, k) for k in range(args.seeds) for s in args.shares],
            "long": lambda: [bench.long(s) for s in args.shares],
        }
        for stage in args.stages:
            plan[stage]()
            write(bench)
    write(bench)
    return 0


def write(bench: Bench) -> None:
    result = summarize(bench)
    from _common import machine_info

    result["machine"] = machine_info()
    result["teacher"] = bench.teacher_dev()
    out = Path(bench.args.out)
    out.write_text(json.dumps(result, indent=1) + "\n")
    out.with_suffix(".md").write_text(table(result))
    plot(result, out.with_suffix(".png"))


def _fmt(stats: dict) -> str:
    if stats.get("mean") is None:
        return "not run yet"
    seeds = ", ".join(f"{v:.4f}" for v in stats["per_seed"])
    ci = stats.get("ci95")
    band = f" [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else ""
    return f"{stats['mean']:.4f}{band} ({seeds})"


def table(result: dict) -> str:
    """The Markdown summary: per budget, the three rows and their wall times."""
    T, teacher = result["T_s"], result["teacher"]
    cpu = result["machine"].get("cpu", "?")
    lines = [
        "# Compress once, or distil each budget alone?",
        "",
        f"Command: `{result['command']}`. Machine: {cpu} "
        f"({result['machine'].get('logical_cores', '?')} cores). Super-BERT training time "
        f"T = {T / 60:.1f} min (bench/train_sst2.py's recipe: its steps at the step rates "
        f"probed here on a quiet machine, plus its evaluations and checkpoints; its wall "
        f"clock said {result['T_wall_s'] / 60:.1f} min on a shared machine); K = "
        f"{result['K']} budgets, so equal compute for one budget is T/K = "
        f"{T / result['K'] / 60:.1f} min. Distilled-alone times are likewise steps at the "
        "probed step rate.",
        f"Teacher: dev accuracy {teacher['dev']:.4f} as an int8 ONNX model "
        f"({teacher['dev_fp32']:.4f} in fp32). Dev accuracy of int8 ONNX models on all 872 "
        "sentences; mean, 95% CI over seeds (t interval) and per seed.",
        "",
        "| budget | arch (shipped) | compressed once | + polish | distilled alone at T/K |"
        " alone, longer (seed 0) |",
        "|---|---|---|---|---|---|",
    ]
    for b in result["budgets"]:
        once = b["once"] or {}
        long = b.get("alone_long")
        longer = f"{long['dev']:.4f} at {long['train_s'] / 60:.0f} min" if long else "not run yet"
        lines.append(
            f"| {b['share']:.0%} | {_short(once.get('arch'))} | "
            f"{once.get('dev', float('nan')):.4f} | {_fmt(b['polish'])} | {_fmt(b['alone'])} "
            f"| {longer} |"
        )
    lines += ["", "Wall time (training seconds; search and ship for the once row):", "",
              "| budget | search + ship | polish | alone (T/K) |"
              " alone to match once: mean (per seed) |",
              "|---|---|---|---|---|"]  # fmt: skip
    for b in result["budgets"]:
        once = b["once"] or {}
        lines.append(
            f"| {b['share']:.0%} | {once.get('search_s', 0) + once.get('ship_s', 0):.0f} s | "
            f"{_mean_s(b['polish']['wall_s'])} | {_mean_s(b['alone']['wall_s'])} | "
            f"{_match(b['time_to_match_s'])} |"
        )
    ratio = result["ratio"]
    lines.append("")
    if ratio["complete"]:
        by_k = ", ".join(f"K={k}: {v:.2f}" for k, v in ratio["by_K"].items())
        bound = "at least " if ratio["lower_bound"] else ""
        lines.append(
            f"Compress-once ratio (K separate distillations' time to match the super-BERT's "
            f"sub-BERTs, the mean over seeds {', '.join(ratio['seeds'])}, over T plus K "
            f"searches and ships): {bound}{ratio['measured']:.2f} at K = {result['K']}; "
            f"{by_k}"
            + (" (a lower bound: some seed's curve never matched; its length counted)."
               if ratio["lower_bound"] else ".")
        )  # fmt: skip
    else:
        lines.append(f"Compress-once ratio: not yet ({ratio['why']}).")
    return "\n".join(lines) + "\n"


def _match(match: dict | None) -> str:
    """The mean time to match and the per-seed times, '>' where a seed never matched."""
    if match is None:
        return "-"
    seeds = ", ".join(
        f"{'>' if name in match['not_reached'] else ''}{t:.0f}"
        for name, t in match["per_seed_s"].items()
    )
    return f"{'>' if match['lower_bound'] else ''}{match['mean_s']:.0f} s ({seeds})"


def _short(arch: dict | None) -> str:
    if not arch:
        return "-"
    layers = arch["layers"]
    return f"L{len(layers)}:" + ",".join(f"{la['heads']}/{la['ffn']}" for la in layers)


def _mean_s(values: list) -> str:
    values = [v for v in values if v is not None]
    return f"{np.mean(values):.0f} s" if values else "-"


def _minutes(curve: list, budget: dict) -> list[float]:
    """A curve's x: its steps at the quiet step rate, in minutes."""
    return [p[2] * budget["seconds_per_step"] / 60 for p in curve]


def plot(result: dict, path: Path) -> None:
    """Dev accuracy against training wall time, one panel per budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgets = result["budgets"]
    fig, axes = plt.subplots(1, len(budgets), figsize=(4 * len(budgets), 3.6), sharey=True)
    T = result["T_s"] / 60
    for ax, b in zip(np.atleast_1d(axes), budgets, strict=True):
        for i, (_, curve) in enumerate(sorted(b["alone_curves"].items())):
            if curve:
                x, y = _minutes(curve, b), [p[1] for p in curve]
                ax.plot(x, y, "-", color="C0", alpha=0.5,
                        label="distilled alone (fp32)" if i == 0 else None)  # fmt: skip
        if b.get("alone_long"):
            curve = b["alone_long"]["curve"]
            ax.plot(
                _minutes(curve, b),
                [p[1] for p in curve],
                "--",
                color="C0",
                label="alone, seed 0 longer",
            )
        once = b["once"]
        if once:
            spent = T + (once["search_s"] + once["ship_s"]) / 60
            ax.plot([spent], [once["dev"]], "o", color="C1", label="compressed once (int8)")
            if b["polish"]["mean"] is not None:
                extra = np.mean([w for w in b["polish"]["wall_s"] if w]) / 60
                ax.plot([spent + extra], [b["polish"]["mean"]], "s", color="C2",
                        label="once + polish (int8, mean)")  # fmt: skip
        if b["alone"]["mean"] is not None:
            steps = np.mean(b["alone"]["steps"]) * b["seconds_per_step"]
            ax.plot([steps / 60], [b["alone"]["mean"]], "x",
                    color="C0", label="alone at T/K (int8, mean)")  # fmt: skip
        ax.axvline(T / result["K"], color="grey", lw=0.8, ls=":", label="T/K")
        ax.axhline(result["teacher"]["dev"], color="black", lw=0.8, label="teacher (int8)")
        ax.set_title(f"latency budget {b['share']:.0%}")
        ax.set_xlabel("training wall time (min)")
    np.atleast_1d(axes)[0].set_ylabel("SST-2 dev accuracy")
    np.atleast_1d(axes)[0].legend(fontsize=7)
    save_figure(fig, path)


if __name__ == "__main__":
    sys.exit(main())
