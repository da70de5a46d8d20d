"""Does a bundle run as fast as its manifest says? Checked the way a user would check it.

    .venv/bin/python bench/bundle_latency.py demo-out/bundles runs/bench-search/bundles

For every bundle under the given folders (any depth: each folder holding a manifest.json
and a model.onnx), a fresh process that does not import yoco_deploy builds a plain
``onnxruntime.InferenceSession`` from the manifest's recorded "session" (through
examples/use_bundle.py, the recipe users copy) and times the bundle and the reference
model its manifest was timed beside (exported here from the predictor's recorded
reference architecture), alternating, --runs runs after warm-up. Reported per bundle:

- absolute: the fresh median against the manifest's measured median (same machine, a
  later moment: drift included);
- relative: fresh bundle / fresh reference against the manifest's measured median /
  its reference_ms (what ship recorded side by side): drift cancels.

- the machine's state: the fresh reference against the manifest's reference_ms (the speed
  its latency is stated at: the device's profiled one, or the ship's). Within +-5% the
  machine runs at that speed ("same state"), and the absolute check is judged there;
  beyond it, drift is reported, not judged;
- the ship-time prediction error: the manifest's calibrated prediction against its own
  measurement.

Both checks must be within +-10%. Writes bench/results/bundle_latency.json and .md (or
--out). A timing job: run it alone.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from _common import RESULTS, ROOT

SAME_STATE = 0.05  # the reference within 5% of its stated speed: the same machine state

CHILD = r"""
import importlib.util, json, sys, time
import numpy as np
spec = importlib.util.spec_from_file_location("use_bundle", sys.argv[1])
ub = importlib.util.module_from_spec(spec); spec.loader.exec_module(ub)
import onnxruntime as ort
assert "yoco_deploy" not in sys.modules
manifest = json.loads(open(sys.argv[2] + "/manifest.json").read())
session = manifest["session"]
provider = ub.PROVIDERS.get(session["provider"], session["provider"])
opts = lambda: ub.session_options(session)
model = ort.InferenceSession(sys.argv[2] + "/model.onnx", opts(), providers=[provider])
ref = ort.InferenceSession(sys.argv[3], opts(), providers=[provider])
seq, runs = manifest["seq_len"], int(sys.argv[4])
rng = np.random.default_rng(0)
feeds = {"input_ids": rng.integers(1, 1000, size=(manifest["batch"], seq), dtype=np.int64),
         "attention_mask": np.ones((manifest["batch"], seq), dtype=np.int64),
         "token_type_ids": np.zeros((manifest["batch"], seq), dtype=np.int64)}
def once(s):
    t = time.perf_counter(); s.run(None, feeds); return (time.perf_counter() - t) * 1e3
for _ in range(10):
    once(model); once(ref)
m, r = [], []
for _ in range(runs):
    m.append(once(model)); r.append(once(ref))
m, r = np.array(m), np.array(r)
stat = manifest.get("statistic", "median")
p = 50.0 if stat == "median" else float(stat[1:])
print(json.dumps({"median_ms": float(np.median(m)), "ref_ms": float(np.median(r)),
                  "rel": float(np.median(m / r)), "stat_ms": float(np.percentile(m, p))}))
"""


def session_text(session: dict) -> str:
    denormals = "denormals flushed" if session.get("flush_denormals") else "denormals kept"
    return f"spinning {session.get('spinning', 'off')}, {denormals}"


def bundles_under(folders: list[Path]) -> list[Path]:
    found = set()
    for folder in folders:
        for manifest in Path(folder).rglob("manifest.json"):
            if (manifest.parent / "model.onnx").is_file() and ".staging" not in str(manifest):
                found.add(manifest.parent)
    return sorted(found)


def reference_file(manifest: dict, predictors: Path, folder: Path) -> Path | None:
    """The reference model ship timed beside this bundle, rebuilt from its predictor."""
    from yoco_deploy.device.calibrate import build_reference
    from yoco_deploy.device.predictor import LatencyPredictor

    path = predictors / f"{manifest['device']}.json"
    if not path.is_file():
        return None
    return build_reference(LatencyPredictor.load(path), folder)


def runs_for(manifest: dict, runs: int) -> int:
    """At least the runs ship timed for the manifest's statistic (367 for a p99)."""
    from yoco_deploy.deploy.ship_timing import runs_for as ship_runs
    from yoco_deploy.runtime import Protocol

    stat = manifest.get("statistic", "median")
    if stat == "median":
        return runs
    return max(runs, ship_runs(Protocol(), float(stat[1:])).min_runs)


def bundle_pairs(rows: list[dict]) -> list[dict]:
    """Each two bundles of one device and shape: the fresh ratio of their latencies
    against the ratio of their manifests' (what a user choosing between them reads)."""
    out = []
    for i, a in enumerate(rows):
        for b in rows[i + 1 :]:
            if (a["device"], a["shape"]) != (b["device"], b["shape"]):
                continue
            manifest = b["manifest_ms"] / a["manifest_ms"]
            fresh = b["fresh_ms"] / a["fresh_ms"]
            out.append({"a": Path(a["bundle"]).name, "b": Path(b["bundle"]).name,
                        "manifest_ratio": manifest, "fresh_ratio": fresh,
                        "error": fresh / manifest - 1})  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", type=Path, nargs="+")
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument(
        "--repeats", type=int, default=7, help="Rounds: fresh processes per bundle."
    )
    parser.add_argument(
        "--predictors",
        type=Path,
        nargs="+",
        default=[ROOT / "predictors", ROOT / "demo-out" / "predictors"],
        help="Where each bundle's device predictor lives (its reference architecture).",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "bundle_latency.json")
    args = parser.parse_args()
    from _common import machine_info

    rows = []
    with tempfile.TemporaryDirectory(prefix="yoco-bundle-check-") as tmp:
        plan = []
        for bundle in bundles_under(args.folders):
            manifest = json.loads((bundle / "manifest.json").read_text())
            timing = manifest.get("timing") or {}
            ref = None
            for folder in args.predictors:
                ref = ref or reference_file(manifest, folder, Path(tmp) / bundle.name)
            if ref is None or "session" not in manifest or "reference_ms" not in timing:
                rows.append({"bundle": str(bundle), "skipped": "no session or reference record"})
                continue
            plan.append((bundle, manifest, ref, []))
        # rounds: every bundle once per round, so a slow minute hits all bundles alike
        for _ in range(args.repeats):
            for bundle, manifest, ref, fresh in plan:
                out = subprocess.run(
                    [sys.executable, "-c", CHILD, str(ROOT / "examples" / "use_bundle.py"),
                     str(bundle), str(ref), str(runs_for(manifest, args.runs))],
                    capture_output=True, text=True, check=True,
                )  # fmt: skip
                fresh.append(json.loads(out.stdout))
        for bundle, manifest, _, fresh in plan:
            timing = manifest["timing"]
            median = float(np.median([f["median_ms"] for f in fresh]))
            fresh_ref = float(np.median([f["ref_ms"] for f in fresh]))
            drift = fresh_ref / timing["reference_ms"] - 1
            rel = float(np.median([f["rel"] for f in fresh]))
            recorded = manifest["measured_latency_ms"]["median"]
            recorded_rel = recorded / timing["reference_ms"]
            row = {
                "bundle": str(bundle.relative_to(ROOT) if bundle.is_relative_to(ROOT) else bundle),
                "session": manifest["session"],
                "device": manifest["device"],
                "shape": [manifest["batch"], manifest["seq_len"]],
                "manifest_ms": recorded,
                "manifest_rounds": timing.get("rounds"),
                "manifest_spread": timing.get("spread"),
                "manifest_budget_clear": timing.get("budget_clear"),
                "manifest_calibrated_prediction_ms": timing.get("calibrated_prediction_ms"),
                "ship_prediction_error": timing.get("prediction_error"),
                "manifest_reference_ms": timing["reference_ms"],
                "fresh_reference_ms": fresh_ref,
                "reference_drift": drift,
                "same_state": abs(drift) <= SAME_STATE,
                "fresh_ms": median,
                "absolute_error": median / recorded - 1,
                "manifest_rel": recorded_rel,
                "fresh_rel": rel,
                "relative_error": rel / recorded_rel - 1,
                "fresh_runs": fresh,
            }
            tail = manifest["measured_latency_ms"].get("percentile")
            if tail is not None:  # a percentile target: its statistic, fresh, in this process
                stat = float(np.median([f["stat_ms"] for f in fresh]))
                row |= {"statistic": manifest["statistic"], "manifest_stat_ms": tail,
                        "fresh_stat_ms": stat, "stat_error": stat / tail - 1}  # fmt: skip
            rows.append(row)
            print(
                f"{bundle.name}: manifest {recorded:.3f} ms, fresh {median:.3f} ms "
                f"({row['absolute_error']:+.1%}); relative {row['relative_error']:+.1%}; "
                f"reference drift {drift:+.1%}",
                file=sys.stderr,
            )
    checked = [r for r in rows if "skipped" not in r]
    same = [r for r in checked if r["same_state"]]
    within = lambda key, rows: sum(abs(r[key]) <= 0.10 for r in rows)  # noqa: E731
    pairs = bundle_pairs(checked)
    result = {
        "command": "python bench/bundle_latency.py " + " ".join(sys.argv[1:]),
        "machine": machine_info(),
        "runs": args.runs,
        "repeats": args.repeats,
        "bundles": rows,
        "within_10pct_absolute": f"{within('absolute_error', checked)}/{len(checked)}",
        "within_10pct_absolute_same_state": f"{within('absolute_error', same)}/{len(same)}",
        "within_10pct_relative": f"{within('relative_error', checked)}/{len(checked)}",
        "ship_prediction_within_10pct": f"{within('ship_prediction_error', checked)}/"
        f"{len(checked)}",
        "pairs": pairs,
        "pairs_within_10pct": f"{within('error', pairs)}/{len(pairs)}",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    lines = [
        "# Bundles re-timed by a plain onnxruntime session built from the manifest",
        "",
        f"Command: `{result['command']}`; {args.repeats} fresh processes x {args.runs} runs "
        "per bundle (in rounds over all bundles), bundle and reference alternating; "
        f"machine: {result['machine']['cpu']}, "
        f"{result['machine']['logical_cores']} cores. Within +-10%: relative to the "
        f"reference {result['within_10pct_relative']}; absolute "
        f"{result['within_10pct_absolute']} ({result['within_10pct_absolute_same_state']} "
        f"where the reference runs within +-{SAME_STATE:.0%} of its stated speed); "
        f"ship-time calibrated prediction {result['ship_prediction_within_10pct']}.",
        "",
        "| bundle | session | manifest ms | calibrated prediction ms (error) | fresh ms "
        "| abs. error | reference drift | rel. error |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in checked:
        pred = r["manifest_calibrated_prediction_ms"]
        lines.append(
            f"| {Path(r['bundle']).name} | {session_text(r['session'])} | {r['manifest_ms']:.3f} | "
            f"{pred:.3f} ({r['ship_prediction_error']:+.1%}) | {r['fresh_ms']:.3f} | "
            f"{r['absolute_error']:+.1%} | {r['reference_drift']:+.1%} | "
            f"{r['relative_error']:+.1%} |"
        )
    tails = [r for r in checked if "statistic" in r]
    if tails:
        lines += [
            "",
            "Bundles budgeted at a percentile, that percentile of the fresh runs (the median "
            "over the fresh processes) against the manifest's:",
            "",
            "| bundle | batch x seq | statistic | manifest ms | fresh ms | error |",
            "|---|---|---|---|---|---|",
        ]
        for r in tails:
            lines.append(
                f"| {Path(r['bundle']).name} | {r['shape'][0]} x {r['shape'][1]} | "
                f"{r['statistic']} | {r['manifest_stat_ms']:.3f} | {r['fresh_stat_ms']:.3f} | "
                f"{r['stat_error']:+.1%} |"
            )
    if pairs:
        lines += [
            "",
            f"Between two bundles of one device, the fresh latency ratio against the "
            f"manifests' ratio: within +-10% {result['pairs_within_10pct']}.",
            "",
            "| bundle a | bundle b | manifests b/a | fresh b/a | error |",
            "|---|---|---|---|---|",
        ]
        for p in pairs:
            lines.append(
                f"| {p['a']} | {p['b']} | {p['manifest_ratio']:.3f} | {p['fresh_ratio']:.3f} "
                f"| {p['error']:+.1%} |"
            )
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
