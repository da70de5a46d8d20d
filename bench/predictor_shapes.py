"""One predictor over a grid of shapes: how well it answers at shapes it never timed.

    .venv/bin/python bench/predictor_shapes.py [--n 40] [--test-n 30]

On this CPU (MiniLM space, int8, 2 threads), each profile a `yoco-deploy profile` run:

1. the grid: --n sub-BERTs at batches 1, 4, 16 x sequence lengths 32, 128 (6 shapes),
   then `yoco-deploy fit` on it (no hold-out): the predictor under test; `fit` also
   leaves each shape between two others (batch 4) out in turn and records the accuracy
   there (``metrics.unseen_shapes``);
2. the check: --test-n other sub-BERTs (none of the grid's) at shapes inside the grid
   that it never timed, batches 2 and 8 x lengths 64 and 96, each timed beside the
   reference model at that shape.

Scored on the check's (sub-BERT, shape) pairs: the predicted latency over the reference
model's at that shape (both predicted: the reference was never timed there either)
against the ratio measured beside it; within ±10% and ±5%, MAPE and Kendall tau, per
shape and overall. That ratio times the reference timed at the shape is what
`predict --calibrate` states. Resumable (the profiler resumes a killed profile); a timing
job: run it alone. Writes bench/results/predictor_shapes.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from _common import RESULTS, ROOT, machine_info, write_result, yoco_output

GRID = {"batch": (1, 4, 16), "seq_len": (32, 128)}
CHECK = {"batch": (2, 8), "seq_len": (64, 96)}  # inside the grid, never profiled there
UNSEEN = tuple((b, s) for b in CHECK["batch"] for s in CHECK["seq_len"])
COMMON = ["--model", "minilm", "--threads", "2", "--format", "int8"]


def profile(folder: Path, n: int, seed: int, shapes: list[str], exclude: Path | None) -> None:
    """`yoco-deploy profile` into ``folder`` (it resumes, and skips what it holds)."""
    extra = ["--exclude-profile", str(exclude)] if exclude else []
    yoco_output("profile", *COMMON, *shapes, "--device", folder.name, "--profiles-dir",
                str(folder.parent), "--n", str(n), "--seed", str(seed), *extra)  # fmt: skip


def grid_options(grid: dict) -> list[str]:
    out = []
    for b in grid["batch"]:
        out += ["--batch", str(b)]
    for s in grid["seq_len"]:
        out += ["--seq-len", str(s)]
    return out


def check_rows(folder: Path) -> list[dict]:
    """The check profile's rows as timed: each sub-BERT's ratio to the reference beside
    it at that shape (not rebased: the shapes are scored one by one)."""
    from yoco_deploy.device.profile_store import open_log

    return [r for r in open_log(folder).latest().values() if r["kind"] == "model"]


def score(predictor, rows: list[dict]) -> dict:
    from yoco_deploy.arch import Arch
    from yoco_deploy.device.predictor import latency_metrics

    keys = ("n", "within10", "within5", "mape", "kendall_tau")
    out, measured, predicted = {}, [], []
    for shape in UNSEEN:
        mine = [r for r in rows if (r["batch"], r["seq_len"]) == shape]
        pred = [predictor.predict_relative([Arch.from_dict(r["arch"])], *shape)[0] for r in mine]
        got = [r["rel"] for r in mine]
        m = latency_metrics(np.array(got), np.array(pred))
        out[f"{shape[0]}x{shape[1]}"] = {k: m[k] for k in keys}
        measured += got
        predicted += pred
    m = latency_metrics(np.array(measured), np.array(predicted))
    out["all"] = {k: m[k] for k in keys}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--test-n", type=int, default=30)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-shapes")
    parser.add_argument("--out", type=Path, default=RESULTS / "predictor_shapes.json")
    args = parser.parse_args(argv)
    from yoco_deploy.device.fit import fit_profile

    grid, check = args.work / "grid", args.work / "check"
    profile(grid, args.n, 0, grid_options(GRID), None)
    profile(check, args.test_n, 1000, grid_options(CHECK), grid)
    fitted = fit_profile(grid, args.work / "grid.json", holdout=0, plot=False).predictor
    rows = [r for r in check_rows(check) if (r["batch"], r["seq_len"]) in UNSEEN]
    result = {
        "benchmark": "predictor_shapes",
        "command": "python bench/predictor_shapes.py " + " ".join(sys.argv[1:]),
        "machine": machine_info(),
        "grid": GRID,
        "unseen_shapes": [f"{b}x{s}" for b, s in UNSEEN],
        "n": args.n,
        "test_n": args.test_n,
        "model": fitted.model["type"],
        "fit_unseen_shapes": fitted.metrics["unseen_shapes"],
        "scores": score(fitted, rows),
    }
    write_result(args.out, result, table(result))
    return 0


def table(result: dict) -> str:
    m = result["machine"]
    lines = [
        "# One predictor over a grid of shapes, at shapes it never timed",
        "",
        f"`{result['command']}` on {m.get('cpu')} ({m.get('logical_cores')} cores); MiniLM "
        f"space, int8, 2 threads. Grid: {result['n']} sub-BERTs at batches "
        f"{', '.join(map(str, result['grid']['batch']))} x lengths "
        f"{', '.join(map(str, result['grid']['seq_len']))}; model chosen by `fit`: "
        f"{result['model']}. Checked on {result['test_n']} other sub-BERTs at "
        f"{' and '.join(result['unseen_shapes'])}, each timed beside the reference there.",
        "",
        "| shapes | pairs | within ±10% | within ±5% | MAPE | Kendall tau |",
        "|---|---|---|---|---|---|",
    ]
    for name, s in result["scores"].items():
        lines.append(
            f"| {name} | {s['n']} | {s['within10']:.0%} | {s['within5']:.0%} | "
            f"{s['mape']:.1%} | {s['kendall_tau']:.2f} |"
        )
    fit = result["fit_unseen_shapes"]
    if fit.get("shapes"):
        lines += [
            "",
            f"`fit`'s own check, each of {', '.join(fit['shapes'])} left out of the grid in "
            f"turn: {fit['within10']:.0%} within ±10%, MAPE {fit['mape']:.1%} "
            f"({fit['n']} pairs).",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
