"""A predictor from another CPU, adapted here from few measurements (`fit --prior`).

    .venv/bin/python bench/predictor_transfer.py [--prior predictors/x86-2c-ort-cpu-minilm.json]

On this CPU (MiniLM space, int8, seq 128, batch 1, 2 threads), each profile a separate
`yoco-deploy profile` run, as a user would make it:

1. a held-out test profile of --test-n sub-BERTs (seed 1000), timed pairwise beside the
   full model: the independent check every predictor below is scored on;
2. for each n in --sizes and each design seed in --seeds: `profile --n n` (none of the
   test set's sub-BERTs), then, with nothing timed,
   - *prior as-is*: the prior predictor unchanged;
   - *prior scaled*: the prior times one factor fitted on the n;
   - *adapted*: `fit --prior` (what it chooses by cross-validation);
   - *no prior*: `fit` alone (from 10 measurements).
   Each scored on the test profile: share within ±10% and ±5%, MAPE and Kendall tau of
   the latency relative to the full model timed beside it.

The prior is another CPU's predictor (default: the committed one); the CPUs of both are
stated. Also writes this CPU's own predictor from the largest profile (no prior) into
bench/results/predictor_transfer/, to serve as the prior on the other CPU kind.
Resumable: finished profiles are skipped (the profiler resumes a killed one). A timing
job: run it alone. Writes bench/results/predictor_transfer-CPU.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from _common import RESULTS, ROOT, write_result, yoco_output

COMMON = ["--model", "minilm", "--threads", "2", "--format", "int8", "--seq-len", "128",
          "--batch", "1"]  # fmt: skip


def cpu_slug(cpu: str) -> str:
    """A file-name form of a CPU model name ("AMD EPYC" -> "amd-epyc")."""
    return "".join(c if c.isalnum() else "-" for c in cpu.lower()).strip("-")


def profiled(folder: Path, n: int) -> bool:
    from yoco_deploy.device.profile_store import profiled_arch_ids

    return (folder / "device.json").is_file() and len(profiled_arch_ids(folder)) >= n


def profile(folder: Path, n: int, seed: int, exclude: Path | None = None) -> float | None:
    """`yoco-deploy profile` into ``folder`` unless done; its wall seconds if it ran."""
    if profiled(folder, n):
        return None
    extra = ["--exclude-profile", str(exclude)] if exclude else []
    _, wall = yoco_output("profile", *COMMON, "--device", folder.name, "--profiles-dir",
                  str(folder.parent), "--n", str(n), "--seed", str(seed), *extra)  # fmt: skip
    return round(wall, 1)


def score(predictor, test, full: int) -> dict:
    """The predictor's latency relative to the full model (``test.archs[full]``, timed in
    the same test profile), against the same ratio as measured: each sub-BERT's ratio to
    the reference timed beside it, over the full model's. The reference-relative scores
    ride along (``vs_reference``)."""
    from yoco_deploy.device.predictor import latency_metrics, predict_rel

    predicted = np.asarray(predict_rel(predictor.model, test.archs, test.shapes, predictor.dims))
    others = np.arange(len(test.rel)) != full
    m = latency_metrics(test.rel[others] / test.rel[full], predicted[others] / predicted[full])
    r = latency_metrics(test.rel, predicted)
    keys = ("n", "within10", "within5", "mape", "kendall_tau")
    return {k: m[k] for k in keys} | {"vs_reference": {k: r[k] for k in keys}}


def prior_space_max(profile: Path) -> str:
    """The full model's arch id (the design profiles the max sub-BERT first)."""
    from yoco_deploy.device.profile_store import read_device
    from yoco_deploy.space import SearchSpace

    return SearchSpace.from_dict(read_device(profile)["space"]).max_arch().arch_id


def scaled(prior, data) -> dict:
    """The prior times the one factor that fits ``data`` best in relative error."""
    from yoco_deploy.device.prior import fit_prior_model

    return {**prior.__dict__, "model": fit_prior_model(prior.model, data, prior.dims, 0)}


def run(args) -> dict:
    from yoco_deploy.device.fit import fit_profile
    from yoco_deploy.device.predictor import LatencyPredictor
    from yoco_deploy.device.profile_store import load_training_data
    from yoco_deploy.runtime import host_fingerprint

    here = host_fingerprint()["cpu"]
    work = args.runs / "transfer" / cpu_slug(here)
    test_dir = work / "test"
    walls = {"test": profile(test_dir, args.test_n, 1000)}
    test, _ = load_training_data(test_dir)
    full = [a.arch_id for a in test.archs].index(prior_space_max(test_dir))
    prior = LatencyPredictor.load(args.prior)
    rows = []
    for n in args.sizes:
        for seed in args.seeds if n < max(args.sizes) else args.seeds[:1]:
            folder = work / f"n{n}-seed{seed}"
            walls[folder.name] = profile(folder, n, seed, exclude=test_dir)
            data, _ = load_training_data(folder)
            out = work / "predictors"
            adapted = fit_profile(folder, out / f"{folder.name}-prior.json", holdout=0,
                                  plot=False, prior=args.prior).predictor  # fmt: skip
            row = {"n": n, "seed": seed, "prior as-is": score(prior, test, full),
                   "prior scaled": score(LatencyPredictor(**scaled(prior, data)), test, full),
                   "adapted": {**score(adapted, test, full),
                               "variant": adapted.metrics["selection"].get(
                                   "prior", {}).get("variant", adapted.model["type"])}}  # fmt: skip
            if n >= 10:
                alone = fit_profile(folder, out / f"{folder.name}.json", holdout=0, plot=False)
                row["no prior"] = {**score(alone.predictor, test, full),
                                   "model": alone.predictor.model["type"]}  # fmt: skip
                if n == max(args.sizes):
                    own = RESULTS / "predictor_transfer" / f"{work.name}-minilm.json"
                    alone.predictor.save(own)  # the prior for the other CPU kind
            rows.append(row)
    return {
        "benchmark": "predictor_transfer",
        "command": "python bench/predictor_transfer.py " + " ".join(sys.argv[1:]),
        "cpu": here,
        "prior": {
            "file": str(
                args.prior.relative_to(ROOT) if args.prior.is_relative_to(ROOT) else args.prior
            ),
            "cpu": prior.device.get("cpu"),
            "device": prior.device.get("name"),
        },
        "test_n": len(test.rel),
        "profile_wall_s": walls,
        "rows": rows,
    }


def markdown(result: dict) -> str:
    kinds = ("prior as-is", "prior scaled", "adapted", "no prior")
    lines = [
        "# A predictor from another CPU, adapted from few measurements",
        "",
        f"`{result['command']}` on {result['cpu']}; prior: `{result['prior']['file']}` "
        f"(fitted on {result['prior']['cpu']}). Scored on {result['test_n']} held-out "
        "sub-BERTs timed here, each beside the reference model (int8, seq 128, batch 1, "
        "2 threads): "
        "within ±10% / within ±5% / MAPE / Kendall tau of the latency relative to the full "
        "model (each sub-BERT's ratio to the reference timed beside it, over the full "
        "model's; the full model is among them). One row per design seed.",
        "",
        "| n | seed | " + " | ".join(kinds) + " |",
        "|---" * (len(kinds) + 2) + "|",
    ]
    for r in result["rows"]:
        cells = []
        for k in kinds:
            m = r.get(k)
            cells.append("-" if m is None else f"{m['within10']:.0%} / {m['within5']:.0%} / "
                         f"{m['mape']:.1%} / {m['kendall_tau']:.2f}")  # fmt: skip
        lines.append(f"| {r['n']} | {r['seed']} | " + " | ".join(cells) + " |")
    chosen = [f"n={r['n']} seed {r['seed']}: {r['adapted']['variant']}" for r in result["rows"]]
    lines += ["", "adapted: the variant `fit --prior` chose per row: " + ", ".join(chosen)]
    mean10 = [r["adapted"]["within10"] for r in result["rows"] if r["n"] == 10]
    if mean10:
        lines.append(f"With 10 measurements, adapted: {np.mean(mean10):.0%} within ±10% "
                     f"(mean over {len(mean10)} design seeds).")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--prior", type=Path, default=ROOT / "predictors/x86-2c-ort-cpu-minilm.json"
    )
    parser.add_argument("--runs", type=Path, default=ROOT / "runs")
    parser.add_argument("--sizes", type=int, nargs="+", default=[5, 10, 20, 40])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--test-n", type=int, default=59)
    parser.add_argument(
        "--out", type=Path, default=None,
        help="Default: bench/results/predictor_transfer-CPU.json (one file per CPU kind).",
    )  # fmt: skip
    args = parser.parse_args(argv)
    result = run(args)
    args.out = args.out or RESULTS / f"predictor_transfer-{cpu_slug(result['cpu'])}.json"
    write_result(args.out, result, markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
