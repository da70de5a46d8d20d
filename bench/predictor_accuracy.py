"""Latency-predictor accuracy on this machine, for the MiniLM and BERT-base spaces.

    .venv/bin/python bench/predictor_accuracy.py [--spaces minilm bert-base]

Per space, three separate processes (what a user would run):
  1. `yoco-deploy profile` of up to --n sub-BERTs (int8, seq 128, batch 1, 2 threads)
     into profiles/NAME (the committed default profile of this machine class);
  2. later, `yoco-deploy profile` of --test-n *further* sub-BERTs (another seed, none of
     step 1's) into profiles/NAME-heldout;
  3. `yoco-deploy fit --profile profiles/NAME --test profiles/NAME-heldout`, which writes
     predictors/NAME.json and its PNG. Each held-out sub-BERT's predicted latency
     relative to the full model is scored against the ratio measured pairwise beside it
     in step 2; the same predictions in ms (scaled by that reference, what `predict
     --calibrate` does) are scored against the unpaired medians too.
Writes bench/results/predictor_accuracy.json and a Markdown table. `--refit` repeats
step 3 on the committed profiles only (nothing is timed).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from _common import RESULTS, ROOT, yoco_output

MODELS = {"minilm": "minilm", "bert-base": str(ROOT / "configs" / "models" / "bert-base")}
MACHINE_CLASS = "x86-2c-ort-cpu"


def retire_stale(folder: Path, threads: int) -> None:
    """A committed profile measured before session settings were recorded (spinning off),
    under other session settings than the profiler's defaults now, or on another CPU
    (these benchmarks run wherever a session lands), is re-made here: it is moved aside,
    never mixed with new rows (git keeps the old one)."""
    from yoco_deploy.runtime import SessionSpec, host_fingerprint, recorded_session

    device = folder / "device.json"
    if not device.is_file():
        return
    fingerprint = json.loads(device.read_text())["fingerprint"]
    why = None
    if "session" not in fingerprint:
        why = "spinning-off"
    elif recorded_session(fingerprint) != SessionSpec(threads=threads):
        why = "other-session"
    elif fingerprint.get("cpu") != host_fingerprint()["cpu"]:
        why = "other-cpu"
    if why:
        folder.rename(folder.with_name(f"{folder.name}.{why}-{int(time.time())}"))


def run_space(space: str, n: int, test_n: int, until: str | None, threads: int) -> dict:
    name = f"{MACHINE_CLASS}-{space}"
    train_dir, test_dir = f"profiles/{name}", f"profiles/{name}-heldout"
    for folder in (train_dir, test_dir):
        retire_stale(ROOT / folder, threads)
    common = [
        "--model",
        MODELS[space],
        "--threads",
        str(threads),
        "--format",
        "int8",
        "--seq-len",
        "128",
        "--batch",
        "1",
    ]
    extra = ["--until", until] if until else []
    out, train_s = yoco_output("profile", *common, "--device", name, "--n", str(n), *extra)
    train = json.loads(out)
    out, test_s = yoco_output(
        "profile",
        *common,
        "--device",
        f"{name}-heldout",
        "--n",
        str(test_n),
        "--seed",
        "1000",
        "--exclude-profile",
        train_dir,
    )
    row = {
        "space": space,
        "device": name,
        "profiled": train["measured"],
        "refinement_rounds": train["rounds"],
        "heldout": json.loads(out)["measured"],
        "profile_wall_s": round(train_s, 1),
        "heldout_wall_s": round(test_s, 1),
    }
    return {**row, **refit(name)}


def refit(name: str) -> dict:
    """`yoco-deploy fit` of the committed profile, scored on its held-out profile."""
    train_dir, test_dir = f"profiles/{name}", f"profiles/{name}-heldout"
    _, fit_s = yoco_output(
        "fit", "--profile", train_dir, "--test", test_dir, "--out", f"predictors/{name}.json"
    )
    predictor = json.loads((ROOT / "predictors" / f"{name}.json").read_text())
    return {
        "heldout_timing": timing_noise(ROOT / test_dir),
        "fit_wall_s": round(fit_s, 1),
        "chosen_model": predictor["model"]["type"],
        "selection_cv": predictor["metrics"]["selection"],
        "test": predictor["metrics"]["test"],
        "machine": predictor["device"],
        "command": " ".join(sys.argv),
    }


def timing_noise(profile_dir: Path) -> dict:
    """How noisy the held-out ground truth is: the spread of the reference timed beside
    each sub-BERT, the median coefficient of variation, and how far a sub-BERT's unpaired
    median over its reference's median is from the median of their paired ratios."""
    import numpy as np

    rows = [json.loads(line) for line in (profile_dir / "measurements.jsonl").open()]
    rows = [r for r in rows if r["kind"] == "model"]
    ref = np.array([r["ref_ms"] for r in rows])
    unpaired = np.array([r["median_ms"] / r["ref_ms"] / r["rel"] for r in rows])
    return {
        "reference_ms_min": float(ref.min()),
        "reference_ms_max": float(ref.max()),
        "median_cv": float(np.median([r["cv"] for r in rows])),
        "unpaired_over_paired_sd": float(np.std(unpaired, ddof=1)),
    }


def measurement_span_s(profile_dir: Path) -> float:
    """Wall time the profile took, from its own timestamps (a resumed run's second
    invocation alone would understate it)."""
    times = [json.loads(line)["t"] for line in (profile_dir / "measurements.jsonl").open()]
    return round(max(times) - min(times), 1)


def add_spans(result: dict) -> dict:
    for r in result["spaces"]:
        r["profile_span_s"] = measurement_span_s(ROOT / "profiles" / r["device"])
        r["heldout_span_s"] = measurement_span_s(ROOT / "profiles" / f"{r['device']}-heldout")
    return result


def session_of(row: dict) -> str:
    """How the space was timed: a profile from before sessions were recorded ran with
    spinning off."""
    session = row["machine"].get("session", {})
    denormals = "denormals flushed" if session.get("flush_denormals") else "denormals kept"
    return f"{session.get('spinning', 'off (not recorded)')}, {denormals}"


def markdown(result: dict) -> str:
    lines = [
        "| space | session | profiled (wall) | held-out | model | ±10% | ±5% | MAPE | Kendall τ | "
        "mean signed | in ms: ±10% / MAPE / τ | FLOPs baseline ±10% / MAPE / τ |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["spaces"]:
        t = r["test"]
        m, b = t[r["chosen_model"]], t["flops_baseline"]
        lines.append(
            f"| {r['space']} | {session_of(r)} | {r['profiled']} "
            f"({r['profile_span_s'] / 60:.1f} min) | "
            f"{r['heldout']} | {r['chosen_model']} | {m['within10']:.0%} | {m['within5']:.0%} | "
            f"{m['mape']:.1%} | {m['kendall_tau']:.3f} | {m['mean_signed_error']:+.1%} | "
            f"{triple(m.get('ms'))} | {triple(b)} |"
        )
    lines.append(
        "\nMetrics compare the predicted latency relative to the full model with the ratio "
        "measured pairwise beside it (the predictor's own error). *In ms*: the predictions "
        "scaled by that reference against each sub-BERT's unpaired median, which also "
        "carries the machine's drift between the two medians."
    )
    return "\n".join(lines) + "\n"


def triple(m: dict | None) -> str:
    """±10% / MAPE / τ; a result written before relative metrics existed has none."""
    if m is None:
        return "not recorded"
    return f"{m['within10']:.0%} / {m['mape']:.1%} / {m['kendall_tau']:.3f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spaces", nargs="+", default=["minilm", "bert-base"], choices=MODELS)
    parser.add_argument("--n", type=int, default=150)
    parser.add_argument("--test-n", type=int, default=50)
    parser.add_argument("--until", default=None, help="e.g. within10=0.97 to stop early")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "predictor_accuracy.json")
    parser.add_argument("--table-only", action="store_true")
    parser.add_argument(
        "--refit",
        action="store_true",
        help="Re-fit and re-score the committed profiles of --spaces (times nothing).",
    )
    args = parser.parse_args(argv)
    if args.table_only or args.refit:
        result = add_spans(json.loads(args.out.read_text()))
        for row in result["spaces"] if args.refit else []:
            if row["space"] in args.spaces:
                row.update(refit(row["device"]))
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        args.out.with_suffix(".md").write_text(markdown(result))
        print(markdown(result))
        return 0
    result = {"benchmark": "predictor_accuracy", "command": " ".join(sys.argv), "spaces": []}
    if args.out.exists():  # keep other spaces' results when re-running one space
        old = json.loads(args.out.read_text())
        result["spaces"] = [s for s in old.get("spaces", []) if s["space"] not in args.spaces]
    for space in args.spaces:
        result["spaces"].append(run_space(space, args.n, args.test_n, args.until, args.threads))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    add_spans(result)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(result)
    args.out.with_suffix(".md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
