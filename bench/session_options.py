"""How should a bundle's ONNX Runtime session treat idle worker threads? Measured.

    .venv/bin/python bench/session_options.py [--rounds 5] [--runs 40]

Three int8 MiniLM sub-BERTs (the min, the profiler's reference, the max; random weights,
batch 1, 128 tokens, 2 intra-op threads) under the three spinning settings of
``runtime.SessionSpec``: "on" (ONNX Runtime's default), "off" (what the profiler used up
to now) and "stop-after-run" (``session.force_spinning_stop``).

- **alone**: what a user sees. Each (model, setting) is timed in a fresh process holding
  that one session (warm-up, then --runs runs, median). Rounds go over every cell in a
  shuffled order, so drift hits every setting alike; the table shows the median over
  rounds, the spread of the round medians, and the ratio to "on" (per round, then median).
- **paired**: what the profiler does. The model and the reference alternate in one
  process (``runtime.measure`` with a reference), both under the same setting; the table
  shows the model's median and the model/reference ratio. An idle spinning session steals
  the busy one's cores, so a setting is only fit for profiling if its paired latency
  matches its alone latency.

Writes bench/results/session_options.json and .md. A timing job: run it alone.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import RESULTS

SETTINGS = ("on", "off", "stop-after-run")
SEQ, THREADS = 128, 2


def child(path: str, spinning: str, runs: int) -> None:
    """Time one session alone in this process; print its median (ms) as JSON."""
    from yoco_deploy import runtime

    spec = runtime.SessionSpec(threads=THREADS, spinning=spinning)
    backend = runtime.OrtBackend(spec)
    session = backend.load(Path(path))
    feeds = runtime.make_feeds(1, SEQ)
    protocol = runtime.Protocol(warmup=10, min_runs=runs, max_runs=runs, chunk=runs)
    print(json.dumps(runtime.measure(backend, session, feeds, protocol).to_dict()))


def alone(paths: dict[str, Path], rounds: int, runs: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    cells = [(m, s) for m in paths for s in SETTINGS]
    medians: dict[tuple[str, str], list[float]] = {c: [] for c in cells}
    for r in range(rounds):
        for i in rng.permutation(len(cells)):
            model, setting = cells[i]
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(paths[model]), setting, str(runs)],
                capture_output=True,
                text=True,
                check=True,
            )
            medians[(model, setting)].append(json.loads(out.stdout)["median_ms"])
        print(f"alone: round {r + 1}/{rounds} done", file=sys.stderr, flush=True)
    table = {}
    for model in paths:
        on = np.asarray(medians[(model, "on")])
        for setting in SETTINGS:
            m = np.asarray(medians[(model, setting)])
            table[f"{model}/{setting}"] = {
                "median_ms": float(np.median(m)),
                "round_medians_ms": [round(float(x), 4) for x in m],
                "spread_ms": [float(m.min()), float(m.max())],
                "ratio_to_on": float(np.median(m / on)),
            }
    return table


def paired(paths: dict[str, Path], ref: Path, runs: int) -> dict:
    from yoco_deploy import runtime

    feeds = runtime.make_feeds(1, SEQ)
    protocol = runtime.Protocol(warmup=10, min_runs=runs, max_runs=runs, chunk=runs)
    table = {}
    for setting in SETTINGS:
        backend = runtime.OrtBackend(runtime.SessionSpec(threads=THREADS, spinning=setting))
        reference = backend.load(ref)
        for model, path in paths.items():
            stats = runtime.measure(backend, backend.load(path), feeds, protocol, reference)
            table[f"{model}/{setting}"] = {
                "median_ms": stats.median_ms,
                "ref_ms": stats.ref_ms,
                "rel": stats.rel,
            }
    return table


def markdown(result: dict) -> str:
    lines = [
        "# ONNX Runtime spinning settings: alone vs paired timing",
        "",
        f"Command: `{result['command']}`. Machine: {result['machine']['cpu']}, "
        f"{result['machine']['logical_cores']} logical cores, onnxruntime "
        f"{result['machine']['onnxruntime']}; int8 MiniLM sub-BERTs, batch 1 x {SEQ} tokens, "
        f"{THREADS} threads. Alone: {result['rounds']} rounds x {result['runs']} runs, each "
        "cell in a fresh process, cells shuffled per round. Paired: one process, model and "
        "reference alternating.",
        "",
        "| sub-BERT | setting | alone median ms (round spread) | alone / on | paired median ms "
        "| paired / alone |",
        "|---|---|---|---|---|---|",
    ]
    for key, a in result["alone"].items():
        model, setting = key.split("/")
        p = result["paired"][key]
        lo, hi = a["spread_ms"]
        lines.append(
            f"| {model} | {setting} | {a['median_ms']:.2f} ({lo:.2f}-{hi:.2f}) | "
            f"{a['ratio_to_on']:.3f} | {p['median_ms']:.2f} | "
            f"{p['median_ms'] / a['median_ms']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", nargs=3, metavar=("ONNX", "SPINNING", "RUNS"), default=None)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]))
        return

    from _common import machine_info

    from yoco_deploy.device.profile_store import reference_arch
    from yoco_deploy.device.profiling import ArtifactBuilder
    from yoco_deploy.model.loading import load_config
    from yoco_deploy.space import SearchSpace

    space = SearchSpace.from_config(load_config("minilm"))
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="yoco-session-bench-") as tmp:
        builder = ArtifactBuilder(space, "int8", Path(tmp))
        archs = {
            "min": space.min_arch(),
            "reference": reference_arch(space),
            "max": space.max_arch(),
        }
        paths = {name: builder.build(arch) for name, arch in archs.items()}
        result = {
            "command": "python bench/session_options.py " + " ".join(sys.argv[1:]),
            "machine": machine_info(),
            "rounds": args.rounds,
            "runs": args.runs,
            "archs": {name: a.short() for name, a in archs.items()},
            "alone": alone(paths, args.rounds, args.runs, args.seed),
            "paired": paired({k: v for k, v in paths.items()}, paths["reference"], args.runs),
            "wall_s": time.time() - started,
        }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "session_options.json").write_text(json.dumps(result, indent=1) + "\n")
    (RESULTS / "session_options.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
