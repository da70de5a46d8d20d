"""Stage II on the SST-2 super-BERT of bench/train_sst2.py, on this CPU.

    .venv/bin/python bench/search.py [--supernet runs/sst2-minilm-super/final]

At two latency budgets (from predictors/x86-2c-ort-cpu-minilm.json): ESNG warm, ESNG
cold, random and evolution, each for --seeds seeds with --evaluations accuracy
evaluations; the best feasible search-split metric after 25, 50 and 100 evaluations
(read off one run's anytime curve) and the dev metric (ONNX Runtime) of each run's
chosen sub-BERT, as mean and standard deviation; anytime curves in a PNG. Then, per
budget, ships the ESNG winner (measured latency <= budget, or the next candidate) and
compares it with the best sub-BERT under a FLOPs budget equal to the winner's FLOPs.
Writes bench/results/search.json and a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DEVICE = "x86-2c-ort-cpu-minilm"
# Latency is budgeted and timed at the predictor's profiled shape (seq 128, batch 1); the
# accuracy side uses the super-BERT's own sequence length (SST-2 sentences fit in 64).
LATENCY_SEQ = 128
ALGOS = {
    "esng-warm": ("esng", False),
    "esng-cold": ("esng", True),
    "random": ("random", False),
    "evolution": ("evolution", False),
}


class SharedCache:
    """Evaluations shared across algorithms and seeds: same sub-BERT, same split, same
    number; saves most of the compute when runs revisit sub-BERTs."""

    def __init__(self, evaluator, path: Path):
        # kept on disk: a rerun after a crash spends no evaluation twice
        self.evaluator, self.cache, self.calls, self.path = evaluator, {}, 0, path
        if path.exists():
            for line in path.read_text().splitlines():
                row = json.loads(line)
                self.cache[(row["arch_id"], row["split"])] = row["value"]
        path.parent.mkdir(parents=True, exist_ok=True)

    def evaluate(self, arch, split):
        key = (arch.arch_id, split)
        if key not in self.cache:
            self.calls += 1
            self.cache[key] = self.evaluator.evaluate(arch, split)
            row = {"arch_id": arch.arch_id, "split": split, "value": self.cache[key]}
            with self.path.open("a") as f:
                f.write(json.dumps(row) + "\n")
        return self.cache[key]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--supernet", default=str(ROOT / "runs/sst2-minilm-super/final"))
    parser.add_argument(
        "--budgets-ms",
        type=float,
        nargs=2,
        default=None,
        help="two latency budgets; default: 45% and 65% of the max sub-BERT's",
    )
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--evaluations", type=int, default=100)
    parser.add_argument(
        "--search-examples",
        type=int,
        default=500,
        help="sentences per half of the search split (search, re-score) per evaluation",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "search.json")
    args = parser.parse_args(argv)

    from yoco_deploy.budgets import CostModel, Target
    from yoco_deploy.calibrate import time_reference
    from yoco_deploy.costs import arch_costs
    from yoco_deploy.deploy import (
        SuperBertEvaluator,
        cost_model_for,
        load_supernet,
        ship_result,
    )
    from yoco_deploy.errors import YocoError
    from yoco_deploy.search import Search, SearchSettings
    from yoco_deploy.ship import ShipSettings
    from yoco_deploy.timing import machine_info

    net = load_supernet(args.supernet)
    space = net.super_bert.space
    cache = ROOT / "runs" / "bench-search" / f"evaluations-{args.search_examples}.jsonl"
    evaluator = SharedCache(SuperBertEvaluator(net, max_examples=args.search_examples), cache)
    probe = cost_model_for(
        Target(DEVICE, {"latency": 1e9}), net, ROOT / "predictors", LATENCY_SEQ, 1
    )
    # This machine's speed drifts between the profile and today: calibrate predictions by
    # the reference model timed now (what `search --calibrate` does).
    reference_ms = time_reference(probe.predictor, 1, LATENCY_SEQ, 2)
    top = probe.costs(space.max_arch())["latency"]
    budgets = args.budgets_ms or [round(0.45 * top, 1), round(0.65 * top, 1)]
    marks = [m for m in (25, 50, 100, 200) if m <= args.evaluations]
    result = {
        "benchmark": "search",
        "command": " ".join(sys.argv),
        "budgets_ms": budgets,
        "seq_len": net.max_seq_len,
        "latency_seq_len": LATENCY_SEQ,
        "search_examples": args.search_examples,
        "reference_ms_today": reference_ms,
        "reference_ms_profiled": probe.predictor.reference["median_ms"],
        "evaluations": args.evaluations,
        "seeds": args.seeds,
        "runs": [],
        "ships": [],
    }
    started = time.time()
    dev_cache: dict[str, float] = {}
    for budget in budgets:
        target = Target(DEVICE, {"latency": budget})
        cm = cost_model_for(
            target, net, ROOT / "predictors", LATENCY_SEQ, 1, reference_ms=reference_ms
        )
        for name, (algo, cold) in ALGOS.items():
            for seed in range(args.seeds):
                settings = SearchSettings(
                    algo=algo,
                    evaluations=args.evaluations,
                    seed=seed,
                    warm_theta=None if cold else net.theta,
                )
                run = Search(space, cm, evaluator, settings).run()
                best = run.best
                dev = dev_metric(net, best.arch, dev_cache)
                result["runs"].append(
                    {
                        "budget_ms": budget,
                        "algo": name,
                        "seed": seed,
                        "anytime": run.history,
                        "at": {m: run.history[m - 1] for m in marks},
                        "chosen": best.arch.to_dict(),
                        "search_metric": best.fitness,
                        "rescore_metric": best.rescore,
                        "dev_metric": dev,
                        "predicted_ms": best.costs["latency"],
                    }
                )
                print(
                    f"{budget} ms {name} seed {seed}: search {best.fitness:.4f} dev {dev:.4f}",
                    file=sys.stderr,
                )
                save(result, args.out)
        # ship the ESNG winner, and the best under a FLOPs budget equal to its FLOPs
        settings = SearchSettings(
            algo="esng", evaluations=args.evaluations, seed=0, warm_theta=net.theta
        )
        ship = ShipSettings(seq_len=LATENCY_SEQ, threads=2, max_candidates=10)
        bundles = ROOT / "bundles" / "bench"
        lat_run = Search(space, cm, evaluator, settings).run()
        try:
            shipped = ship_result(net, cm, lat_run, bundles, ship)
        except YocoError as err:  # nothing shipped: say so in the results, go on
            result["ships"].append(
                {"budget_ms": budget, "kind": "latency budget", "error": str(err)}
            )
            save(result, args.out)
            continue
        flops = arch_costs(Arch_of(shipped.manifest), space.dims, LATENCY_SEQ).flops
        ftarget = Target(DEVICE, {"flops": flops})
        fcm = CostModel(ftarget, space, probe.predictor, LATENCY_SEQ, 1, reference_ms)
        flops_run = Search(space, fcm, evaluator, settings).run()
        fshipped = ship_result(net, fcm, flops_run, bundles, ship)
        for kind, s in (("latency budget", shipped), ("FLOPs budget", fshipped)):
            m = s.manifest
            result["ships"].append(
                {
                    "budget_ms": budget,
                    "kind": kind,
                    "bundle": s.path.name,
                    "flops": m["flops"],
                    "measured_ms": m["measured_latency_ms"],
                    "predicted_ms": m["predicted_latency_ms"],
                    "dev_metric": m["metric"]["value"],
                    "within_budget": m["measured_latency_ms"]["median"] <= budget,
                    "rejected": s.rejected,
                    "manifest": m,
                }
            )
        save(result, args.out)
    result["wall_s"] = round(time.time() - started, 1)
    result["machine"] = machine_info()
    result["distinct_evaluations"] = evaluator.calls
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    table = markdown(result, marks)
    args.out.with_suffix(".md").write_text(table)
    plot(result, args.out.with_suffix(".png"))
    print(table)
    return 0


def save(result: dict, out: Path) -> None:
    """Partial results after every run: a crash loses nothing measured."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".partial.json").write_text(json.dumps(result, indent=1) + "\n")


def Arch_of(manifest):
    from yoco_deploy.arch import Arch

    return Arch.from_dict(manifest["arch"])


def dev_metric(net, arch, cache: dict[str, float]) -> float:
    """Dev metric of the chosen sub-BERT with inherited weights (PyTorch, the search's view)."""
    import torch

    from yoco_deploy.data import compute_metrics, encode, to_tensors, trim_padding

    if arch.arch_id in cache:
        return cache[arch.arch_id]
    enc = encode(net.tokenizer, net.data.dev, net.max_seq_len)
    net.super_bert.eval()
    net.super_bert.set_active(arch)
    outs = []
    with torch.no_grad():
        for i in range(0, len(enc["labels"]), 128):
            part = trim_padding({k: v[i : i + 128] for k, v in enc.items() if k != "labels"})
            outs.append(net.super_bert(**to_tensors(part)).numpy())
    metrics = compute_metrics(net.data.task, np.concatenate(outs), enc["labels"])
    cache[arch.arch_id] = metrics.get(net.data.task.metric, metrics["accuracy"])
    return cache[arch.arch_id]


def markdown(result: dict, marks: list[int]) -> str:
    lines = [
        "| budget | algorithm | " + " | ".join(f"search @{m}" for m in marks) + " | dev (chosen) |",
        "|---" * (3 + len(marks)) + "|",
    ]
    for budget in result["budgets_ms"]:
        for algo in ALGOS:
            runs = [r for r in result["runs"] if r["budget_ms"] == budget and r["algo"] == algo]
            cells = []
            for m in marks:
                v = np.array([r["at"][str(m)] if str(m) in r["at"] else r["at"][m] for r in runs])
                cells.append(f"{v.mean():.4f} ± {v.std():.4f}")
            dev = np.array([r["dev_metric"] for r in runs])
            lines.append(
                f"| {budget} ms | {algo} | "
                + " | ".join(cells)
                + f" | {dev.mean():.4f} ± {dev.std():.4f} |"
            )
    lines += [
        "",
        "| budget | shipped under | GFLOPs | measured ms (p90) | dev | within budget |",
        "|---|---|---|---|---|---|",
    ]
    for s in result["ships"]:
        lat = s["measured_ms"]
        lines.append(
            f"| {s['budget_ms']} ms | {s['kind']} | {s['flops'] / 1e9:.2f} | "
            f"{lat['median']:.2f} ({lat['p90']:.2f}) | {s['dev_metric']:.4f} | "
            f"{s['within_budget']} |"
        )
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgets = result["budgets_ms"]
    fig, axes = plt.subplots(1, len(budgets), figsize=(5 * len(budgets), 3.8), squeeze=False)
    for ax, budget in zip(axes[0], budgets, strict=True):
        for algo in ALGOS:
            curves = np.array(
                [
                    r["anytime"]
                    for r in result["runs"]
                    if r["budget_ms"] == budget and r["algo"] == algo
                ]
            )
            curves = np.where(np.isfinite(curves), curves, np.nan)
            x = np.arange(1, curves.shape[1] + 1)
            mean = np.nanmean(curves, axis=0)
            ax.plot(x, mean, label=algo)
            ax.fill_between(x, np.nanmin(curves, axis=0), np.nanmax(curves, axis=0), alpha=0.15)
        ax.set_title(f"latency budget {budget} ms")
        ax.set_xlabel("accuracy evaluations")
        ax.set_ylabel("best feasible search-split metric")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
