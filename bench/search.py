"""Stage II on the SST-2 super-BERT of bench/train_sst2.py, on this CPU.

    .venv/bin/python bench/search.py [--supernet runs/sst2-minilm-super/final] [--ship]

At five latency budgets (35% to 80% of the max sub-BERT's predicted latency, from
predictors/x86-2c-ort-cpu-minilm.json, calibrated by the reference timed at the start):
ESNG warm, ESNG cold, random and evolution, each for --seeds seeds with --evaluations
accuracy evaluations. Per budget and algorithm: mean and 95% confidence interval of the
best feasible search-split metric after 25, 50 and 100 evaluations and of the dev metric
of the chosen sub-BERT; the share of runs whose choice is within 1 point of the majority
class on dev ("stuck", with a Wilson interval); and how many evaluations each algorithm
needs to reach random search's mean result at 100. With --ship, per budget, ships the
ESNG-warm seed-0 winner (through the quality gate) and the best sub-BERT under a FLOPs
budget equal to its FLOPs, and times both (run it alone: it measures latency).

Resumable: every finished run is appended to runs/bench-search/runs.jsonl and skipped on
a rerun; evaluations are cached on disk. Runs go seed by seed across all budgets and
algorithms, so partial results cover every cell. Writes bench/results/search.json, a
Markdown table and anytime curves (PNG).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
from _common import RESULTS, ROOT, label_axes, save_figure, to_json

WORK = ROOT / "runs" / "bench-search"
DEVICE = "x86-2c-ort-cpu-minilm"
PREDICTOR = ROOT / "predictors" / f"{DEVICE}.json"
# Latency is budgeted and timed at the predictor's profiled shape (seq 128, batch 1); the
# accuracy side uses the super-BERT's own sequence length (SST-2 sentences fit in 64).
LATENCY_SEQ = 128
SHARES = (0.35, 0.45, 0.55, 0.65, 0.80)
ALGOS = {
    "esng-warm": ("esng", False),
    "esng-cold": ("esng", True),
    "random": ("random", False),
    "evolution": ("evolution", False),
}
STUCK_POINTS = 0.01  # a choice within 1 point of the majority class is a stuck run


class SharedCache:
    """Evaluations shared across algorithms and seeds: same sub-BERT, same split, same
    result (metric and loss); kept on disk, so a rerun spends no evaluation twice."""

    def __init__(self, evaluator, path: Path):
        from yoco_deploy.train.evaluation import Evaluation

        self.evaluator, self.cache, self.calls, self.path = evaluator, {}, 0, path
        if path.exists():
            for line in path.read_text().splitlines():
                row = json.loads(line)
                self.cache[(row["arch_id"], row["split"])] = Evaluation(**row["evaluation"])
        path.parent.mkdir(parents=True, exist_ok=True)

    def evaluate(self, arch, split):
        from dataclasses import asdict

        key = (arch.arch_id, split)
        if key not in self.cache:
            self.calls += 1
            self.cache[key] = self.evaluator.evaluate(arch, split)
            row = {
                "arch_id": arch.arch_id,
                "arch": arch.to_dict(),  # for bench/search_sim.py's surrogate
                "split": split,
                "evaluation": asdict(self.cache[key]),
            }
            with self.path.open("a") as f:
                f.write(json.dumps(row) + "\n")
        return self.cache[key]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--supernet", default=str(ROOT / "runs/sst2-minilm-super/final"))
    parser.add_argument("--shares", type=float, nargs="+", default=list(SHARES))
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--evaluations", type=int, default=100)
    parser.add_argument(
        "--search-examples",
        type=int,
        default=500,
        help="sentences per half of the search split (search, re-score) per evaluation",
    )
    parser.add_argument("--ship", action="store_true", help="Ship and time one bundle a budget.")
    parser.add_argument(
        "--ship-only",
        action="store_true",
        help="Only ship (no benchmark runs; the runs' results are left as they are). The "
        "budgets are the shares resolved against the committed predictor at today's speed, "
        "recorded in --work/setup.json on first use. Writes bench/results/search_ship.json.",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "search.json")
    parser.add_argument("--work", type=Path, default=WORK, help="Run log, cache, setup.")
    args = parser.parse_args(argv)
    work = args.work

    from _common import machine_info

    from yoco_deploy.deploy.budgets import Target
    from yoco_deploy.deploy.per_target import cost_model_for
    from yoco_deploy.deploy.search import Search, SearchSettings
    from yoco_deploy.deploy.supernet import SuperBertEvaluator, load_supernet
    from yoco_deploy.device.calibrate import time_reference

    net = load_supernet(args.supernet)
    space = net.super_bert.space
    inner = SuperBertEvaluator(net, max_examples=args.search_examples)
    evaluator = SharedCache(inner, work / f"evaluations-{args.search_examples}.jsonl")
    probe = cost_model_for(Target(DEVICE, {"latency": 1e9}), net, PREDICTOR, LATENCY_SEQ, 1)
    setup_path = work / "setup.json"
    if setup_path.exists():  # a resumed benchmark keeps the budgets it started with
        setup = json.loads(setup_path.read_text())
    else:
        # This machine's speed drifts between the profile and today: calibrate predictions
        # by the reference model timed now (what `search --calibrate` does).
        reference_ms = time_reference(probe.predictor, 1, LATENCY_SEQ)
        calibrated = cost_model_for(
            probe.target, net, PREDICTOR, LATENCY_SEQ, 1, reference_ms=reference_ms
        )
        top = calibrated.costs(space.max_arch())["latency"]
        setup = {
            "reference_ms_today": reference_ms,
            "reference_ms_profiled": probe.predictor.reference["median_ms"],
            "max_latency_ms": top,
            "budgets": {str(sh): round(sh * top, 2) for sh in args.shares},
            "machine": machine_info(),
            "started": time.time(),
        }
        work.mkdir(parents=True, exist_ok=True)
        setup_path.write_text(json.dumps(setup, indent=1))
    reference_ms = setup["reference_ms_today"]
    runs_path = work / "runs.jsonl"
    done = {}
    if runs_path.exists():
        for line in runs_path.read_text().splitlines():
            row = json.loads(line)
            done[(row["share"], row["algo"], row["seed"])] = row
    dev_cache: dict[str, float] = {}
    if args.ship_only:  # written after every budget: a stopped run keeps what it shipped
        ships = ship_all(args, net, setup, evaluator, lambda s: write_ships(args, setup, s))
        print(write_ships(args, setup, ships))
        return 0
    for seed in range(args.seeds):
        for share in args.shares:
            budget = setup["budgets"][str(share)]
            cm = cost_model_for(
                Target(DEVICE, {"latency": budget}),
                net,
                PREDICTOR,
                LATENCY_SEQ,
                1,
                reference_ms=reference_ms,
            )
            for name, (algo, cold) in ALGOS.items():
                if (share, name, seed) in done:
                    continue
                settings = SearchSettings(
                    algo=algo,
                    evaluations=args.evaluations,
                    seed=seed,
                    warm_theta=None if cold else net.theta,
                )
                started = time.time()
                run = Search(space, cm, evaluator, settings).run()
                best = run.best
                row = {
                    "share": share,
                    "budget_ms": budget,
                    "algo": name,
                    "seed": seed,
                    "anytime": run.history,
                    "exhausted": run.exhausted,
                    "chosen": best.arch.to_dict(),
                    "search_metric": best.fitness,
                    "rescore_metric": best.rescore,
                    "dev_metric": dev_metric(net, best.arch, dev_cache),
                    "predicted_ms": best.costs["latency"],
                    "tempered": run.tempered,
                    "wall_s": round(time.time() - started, 1),
                }
                with runs_path.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                done[(share, name, seed)] = row
                write_results(args, net, setup, inner, evaluator, done, [])
                print(
                    f"{share:.0%} ({budget} ms) {name} seed {seed}: search "
                    f"{best.fitness:.4f} dev {row['dev_metric']:.4f}",
                    file=sys.stderr,
                )
    ships = ship_all(args, net, setup, evaluator) if args.ship else []
    print(write_results(args, net, setup, inner, evaluator, done, ships))
    return 0


def write_results(args, net, setup, inner, evaluator, done, ships) -> str:
    """The JSON, the table and the plot from the runs done so far (called after every
    run, so partial results are always on disk)."""
    from yoco_deploy.train.evaluation import majority_baseline

    result = {
        "benchmark": "search",
        "command": " ".join(sys.argv),
        **setup,
        "seq_len": net.max_seq_len,
        "latency_seq_len": LATENCY_SEQ,
        "search_examples": args.search_examples,
        "evaluations": args.evaluations,
        "seeds": args.seeds,
        "majority_dev": majority_baseline(net.data.task, net.data.dev.labels),
        "majority_search": majority_baseline(net.data.task, inner.splits["search"]["labels"]),
        "distinct_evaluations": len(evaluator.cache),
        "runs": list(done.values()),
        "ships": ships,
    }
    result["summary"] = summarize(result, args.shares)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(to_json(result) + "\n")
    table = markdown(result, args.shares)
    args.out.with_suffix(".md").write_text(table)
    plot(result, args.shares, args.out.with_suffix(".png"))
    return table


def ship_all(args, net, setup, evaluator, after_each=None) -> list[dict]:
    """Per budget: the ESNG-warm seed-0 winner, and the best sub-BERT under a FLOPs budget
    equal to its FLOPs, shipped (quality gate included) and timed on this machine."""
    from yoco_deploy.deploy.budgets import CostModel, Target
    from yoco_deploy.deploy.per_target import cost_model_for
    from yoco_deploy.deploy.search import Search, SearchSettings
    from yoco_deploy.deploy.ship import ShipSettings, ship_target
    from yoco_deploy.errors import YocoError

    space, ref = net.super_bert.space, setup["reference_ms_today"]

    def search_and_ship(cm):
        ranked = [c.arch for c in Search(space, cm, evaluator, settings).run().ranked]
        return ship_target(net.super_bert, net.tokenizer, net.data, cm, ranked, bundles, ship)

    settings = SearchSettings(algo="esng", evaluations=args.evaluations, seed=0,
                              warm_theta=net.theta)  # fmt: skip
    ship = ShipSettings(seq_len=LATENCY_SEQ, max_candidates=10)  # timed as profiled
    bundles, out = ROOT / "bundles" / "bench", shipped_before(args, setup)
    done = {s["share"] for s in out}
    for share in args.shares:
        if share in done:
            continue
        budget = setup["budgets"][str(share)]
        target = Target(DEVICE, {"latency": budget})
        cm = cost_model_for(target, net, PREDICTOR, LATENCY_SEQ, 1, reference_ms=ref)
        try:
            shipped = search_and_ship(cm)
            flops = shipped.manifest.flops
            fcm = CostModel(Target(DEVICE, {"flops": flops}), space, cm.predictor,
                            LATENCY_SEQ, 1, ref)  # fmt: skip
            fshipped = search_and_ship(fcm)
        except YocoError as err:  # nothing shipped: say so in the results, go on
            out.append({"share": share, "budget_ms": budget, "error": str(err)})
            if after_each:
                after_each(out)
            continue
        for kind, s in (("latency budget", shipped), ("FLOPs budget", fshipped)):
            m = s.manifest.to_dict()
            out.append(
                {
                    "share": share,
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
        if after_each:
            after_each(out)
    return out


def shipped_before(args, setup) -> list[dict]:
    """Budgets an interrupted ``--ship-only`` run already shipped with these budgets (the
    same setup) and whose bundles are still there: a rerun goes on from the next one."""
    path = args.out.with_name("search_ship.json")
    if not path.is_file():
        return []
    old = json.loads(path.read_text())
    if old.get("budgets") != setup["budgets"]:
        return []
    by_share: dict[float, list[dict]] = {}
    for s in old["ships"]:
        if "error" not in s:
            by_share.setdefault(s["share"], []).append(s)
    bench = ROOT / "bundles" / "bench"
    return [
        s
        for rows in by_share.values()
        if len(rows) == 2 and all((bench / r["bundle"]).is_dir() for r in rows)
        for s in rows
    ]


def write_ships(args, setup, ships) -> str:
    """The shipped bundles alone (``--ship-only``), beside the benchmark's results."""
    out = args.out.with_name("search_ship.json")
    result = {
        "benchmark": "search-ship",
        "command": " ".join(sys.argv),
        **setup,
        "latency_seq_len": LATENCY_SEQ,
        "search_examples": args.search_examples,
        "evaluations": args.evaluations,
        "ships": ships,
    }
    out.write_text(to_json(result) + "\n")
    table = ship_table(ships)
    head = (
        f"# Search benchmark bundles\n\nCommand: `{result['command']}`. Budgets: shares of the "
        f"max sub-BERT's calibrated prediction ({setup['max_latency_ms']:.2f} ms, reference "
        f"{setup['reference_ms_today']:.3f} ms today against "
        f"{setup['reference_ms_profiled'][f'1x{LATENCY_SEQ}']:.3f} "
        f"ms profiled); ESNG warm, seed 0, {args.evaluations} evaluations.\n\n"
    )
    out.with_suffix(".md").write_text(head + table)
    return head + table


def ship_table(ships) -> str:
    lines = [
        "| budget | shipped under | GFLOPs | calibrated prediction ms | measured ms (p90) "
        "| prediction error | dev | within budget |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in ships:
        if "error" in s:
            lines.append(f"| {s['budget_ms']} ms | - | - | - | - | - | - | {s['error']} |")
            continue
        lat, timing = s["measured_ms"], s["manifest"].get("timing", {})
        pred = timing.get("calibrated_prediction_ms", math.nan)
        lines.append(
            f"| {s['budget_ms']} ms | {s['kind']} | {s['flops'] / 1e9:.2f} | {pred:.3f} | "
            f"{lat['median']:.3f} ({lat['p90']:.3f}) | {pred / lat['median'] - 1:+.1%} | "
            f"{s['dev_metric']:.4f} | {s['within_budget']} |"
        )
    return "\n".join(lines) + "\n"


def marks_for(evaluations: int) -> list[int]:
    """Where the anytime curves are read: 25, 50, ... and the end."""
    return [m for m in (25, 50, 100, 200) if m < evaluations] + [evaluations]


def mean_ci(values) -> tuple[float, float]:
    """Mean and the half-width of its 95% t interval."""
    from scipy import stats

    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return float(v.mean()) if len(v) else math.nan, math.nan
    half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    return float(v.mean()), float(half)


def wilson(k: int, n: int) -> tuple[float, float]:
    """95% Wilson interval of a share k/n."""
    if n == 0:
        return math.nan, math.nan
    z, p = 1.96, k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def summarize(result: dict, shares) -> list[dict]:
    marks = marks_for(result["evaluations"])
    rows = []
    for share in shares:
        runs = [r for r in result["runs"] if r["share"] == share]
        randoms = [r["anytime"][-1] for r in runs if r["algo"] == "random"]
        target = float(np.mean(randoms)) if randoms else math.nan
        for algo in ALGOS:
            mine = [r for r in runs if r["algo"] == algo]
            if not mine:
                continue
            stuck = sum(r["dev_metric"] <= result["majority_dev"] + STUCK_POINTS for r in mine)
            reach = [
                next((i + 1 for i, v in enumerate(r["anytime"]) if v >= target), None) for r in mine
            ]
            reached = [x for x in reach if x is not None]
            rows.append(
                {
                    "share": share,
                    "budget_ms": mine[0]["budget_ms"],
                    "algo": algo,
                    "runs": len(mine),
                    **{f"search@{m}": mean_ci([r["anytime"][:m][-1] for r in mine]) for m in marks},
                    "dev": mean_ci([r["dev_metric"] for r in mine]),
                    "stuck": stuck,
                    "stuck_ci": wilson(stuck, len(mine)),
                    "evals_to_random@100": float(np.median(reached)) if reached else None,
                    "reached_random@100": len(reached),
                }
            )
    return rows


def save(result: dict, out: Path) -> None:
    """Partial results after every run: a crash loses nothing measured."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".partial.json").write_text(to_json(result) + "\n")


def dev_metric(net, arch, cache: dict[str, float]) -> float:
    """Dev metric of the chosen sub-BERT with inherited weights (PyTorch, the search's
    view), through the shared evaluation."""
    import torch

    from yoco_deploy.train.data import encode, to_tensors
    from yoco_deploy.train.evaluation import evaluate, sorted_by_length

    if arch.arch_id not in cache:
        enc = sorted_by_length(encode(net.tokenizer, net.data.dev, net.max_seq_len))
        net.super_bert.eval()
        net.super_bert.set_active(arch)

        def predict(part):
            with torch.no_grad():
                return net.super_bert(**to_tensors(part)).numpy()

        cache[arch.arch_id] = evaluate(predict, enc, net.data.task).value
    return cache[arch.arch_id]


def markdown(result: dict, shares) -> str:
    marks = marks_for(result["evaluations"])
    ci = lambda x: f"{x[0]:.4f} ± {x[1]:.4f}"  # noqa: E731
    lines = [
        f"Majority class: dev {result['majority_dev']:.4f}, search split "
        f"{result['majority_search']:.4f}. Mean ± 95% CI half-width over seeds.",
        "",
        "| budget | algorithm | runs | "
        + " | ".join(f"search @{m}" for m in marks)
        + " | dev (chosen) | stuck (95% CI) | evals to random@100 |",
        "|---" * (6 + len(marks)) + "|",
    ]
    for r in result["summary"]:
        lo, hi = r["stuck_ci"]
        reach = r["evals_to_random@100"]
        reach_cell = f"{reach:.0f} ({r['reached_random@100']}/{r['runs']})" if reach else "-"
        lines.append(
            f"| {r['share']:.0%} ({r['budget_ms']} ms) | {r['algo']} | {r['runs']} | "
            + " | ".join(ci(r[f"search@{m}"]) for m in marks)
            + f" | {ci(r['dev'])} | {r['stuck']}/{r['runs']} ({lo:.2f}-{hi:.2f}) | {reach_cell} |"
        )
    if result["ships"]:
        lines += ["", ship_table(result["ships"]).rstrip("\n")]
    return "\n".join(lines) + "\n"


def plot(result: dict, shares, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(shares), figsize=(4 * len(shares), 3.6), squeeze=False)
    for ax, share in zip(axes[0], shares, strict=True):
        for algo in ALGOS:
            curves = [
                r["anytime"] for r in result["runs"] if r["share"] == share and r["algo"] == algo
            ]
            if not curves:
                continue
            c = np.array(curves, dtype=float)
            c = np.where(np.isfinite(c), c, np.nan)
            x = np.arange(1, c.shape[1] + 1)
            ax.plot(x, np.nanmean(c, axis=0), label=algo)
            ax.fill_between(x, np.nanmin(c, axis=0), np.nanmax(c, axis=0), alpha=0.12)
        ax.axhline(result["majority_search"], color="grey", lw=0.8, ls=":")
        label_axes(
            ax, "accuracy evaluations", "best feasible search metric",
            f"{share:.0%} of max latency", legend_size=7,
        )  # fmt: skip
    save_figure(fig, path)


if __name__ == "__main__":
    sys.exit(main())
