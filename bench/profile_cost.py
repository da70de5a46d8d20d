"""Where a device profile's time goes, and what the profiler's cuts save, side by side.

    .venv/bin/python bench/profile_cost.py [--n 40] [--rounds 2]

Profiles --n MiniLM sub-BERTs (int8, seq 128, batch 1, 2 threads: what `yoco-deploy
profile --n 40` does) in two ways, alternating in one process, --rounds times each:

- *before*: every sub-BERT exported, validated against PyTorch (fp32, fused and int8
  agreement) and timed, one after another (the profiler as it was);
- *after*: what `yoco-deploy profile` does now (``ArtifactBuilder``'s defaults: the max
  sub-BERT and the reference exported, every other sub-BERT's int8 graph cut out of the
  max one's, ``yoco_deploy/export/slice_graph.py``).

Each profile goes into a fresh folder (nothing resumed). The wall time of each stage is
summed from timers around the exporter's steps (extract, ONNX export, validation,
fusion, int8) and the graph cuts, session loads, the timing of the models beside the
reference, and the reference timed alone; "other" is the rest (the design, the log,
clean-up). A timing job: run it alone. Writes bench/results/profile_cost.{json,md}.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from _common import RESULTS, write_result


class Stopwatch:
    """Wall seconds per stage, from wrappers around module functions (outermost only, so
    a validation inside the fusion step counts once, as fusion)."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self.depth = 0

    def wrap(self, module, name: str, stage: str, when=lambda *a, **k: True):
        original = getattr(module, name)

        def timed(*args, **kwargs):
            if self.depth or not when(*args, **kwargs):
                return original(*args, **kwargs)
            self.depth += 1
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[stage] += time.perf_counter() - started
                self.depth -= 1

        setattr(module, name, timed)
        return lambda: setattr(module, name, original)


def _paired(*args, **kwargs) -> bool:
    """Whether a ``runner.measure`` call times a model beside the reference."""
    return (len(args) > 4 and args[4] is not None) or kwargs.get("reference") is not None


@contextlib.contextmanager
def stopwatch():
    from yoco_deploy.device import profiling
    from yoco_deploy.export import slice_graph, sub_bert
    from yoco_deploy.runtime import runner  # its measure() is the one run_jobs calls
    from yoco_deploy.runtime.session import OrtBackend

    watch = Stopwatch()
    builder = profiling.ArtifactBuilder
    undo = [
        watch.wrap(builder, "prepare", "exports in worker processes",
                   when=lambda self, archs: self.workers > 1),
        watch.wrap(slice_graph.GraphSlicer, "cut", "cut from the max sub-BERT"),
        watch.wrap(sub_bert, "extract", "extract"),
        watch.wrap(sub_bert, "export_onnx", "onnx export"),
        watch.wrap(sub_bert, "validate_onnx", "validation"),
        watch.wrap(sub_bert, "optimize_fused", "fusion"),
        watch.wrap(sub_bert, "quantize_int8", "int8"),
        watch.wrap(OrtBackend, "load", "session load"),
        watch.wrap(runner, "measure", "timing beside the reference", when=_paired),
        watch.wrap(runner, "measure", "reference timed alone",
                   when=lambda *a, **k: not _paired(*a, **k)),
    ]  # fmt: skip
    try:
        yield watch
    finally:
        for restore in reversed(undo):
            restore()


def profile_once(mode: str, n: int, seed: int, work: Path) -> dict:
    from yoco_deploy import runtime
    from yoco_deploy.device import profiling
    from yoco_deploy.device.profiling import ProfileSettings, profile_device
    from yoco_deploy.model.loading import load_config
    from yoco_deploy.space import SearchSpace

    space = SearchSpace.from_config(load_config("minilm"))
    settings = ProfileSettings(
        n=n, fmt="int8", shapes=((1, 128),), seed=seed,
        session=runtime.SessionSpec(threads=2),
    )  # fmt: skip
    out = work / f"{mode}-{seed}"
    shutil.rmtree(out, ignore_errors=True)
    with stopwatch() as watch:
        builder = profiling.ArtifactBuilder
        if mode == "before":  # the profiler as it was: everything validated, one at a time
            profiling.ArtifactBuilder = lambda *a, **k: builder(*a, **k, validate=True, workers=1)
        try:
            started = time.perf_counter()
            profile_device(space, out, out.name, settings, "minilm", progress=lambda *a: None)
            wall = time.perf_counter() - started
        finally:
            profiling.ArtifactBuilder = builder
    stages = dict(watch.seconds)
    stages["other"] = wall - sum(stages.values())
    shutil.rmtree(out, ignore_errors=True)
    return {"mode": mode, "seed": seed, "n": n, "wall_s": wall, "stages_s": stages}


def run(args) -> dict:
    from _common import machine_info

    rows = []
    with tempfile.TemporaryDirectory(prefix="yoco-profile-cost-") as tmp:
        for r in range(args.rounds):
            order = ("before", "after") if r % 2 == 0 else ("after", "before")
            for mode in order:  # interleaved, so a slow spell hits both alike
                rows.append(profile_once(mode, args.n, 100 + r, Path(tmp)))
                print(json.dumps({k: rows[-1][k] for k in ("mode", "seed", "wall_s")}))
    summary = {}
    for mode in ("before", "after"):
        mine = [r for r in rows if r["mode"] == mode]
        stages = sorted({s for r in mine for s in r["stages_s"]})
        summary[mode] = {
            "wall_s": [r["wall_s"] for r in mine],
            "median_wall_s": float(np.median([r["wall_s"] for r in mine])),
            "stages_s": {
                s: float(np.median([r["stages_s"].get(s, 0.0) for r in mine])) for s in stages
            },
        }
    pairs = [b["wall_s"] / a["wall_s"] for b, a in zip(
        [r for r in rows if r["mode"] == "before"], [r for r in rows if r["mode"] == "after"],
        strict=True)]  # fmt: skip
    return {
        "benchmark": "profile_cost",
        "command": "python bench/profile_cost.py " + " ".join(sys.argv[1:]),
        "machine": machine_info(),
        "n": args.n,
        "rounds": args.rounds,
        "rows": rows,
        "summary": summary,
        "speedup_per_round": pairs,
    }


def markdown(result: dict) -> str:
    s = result["summary"]
    stages = sorted(set(s["before"]["stages_s"]) | set(s["after"]["stages_s"]),
                    key=lambda k: -s["before"]["stages_s"].get(k, 0.0))  # fmt: skip
    m = result["machine"]
    lines = [
        f"# Profiling {result['n']} MiniLM sub-BERTs: where the time goes",
        "",
        f"`{result['command']}` on {m.get('cpu')} ({m.get('logical_cores')} cores); "
        f"int8, seq 128, batch 1, 2 threads; {result['rounds']} rounds of each, interleaved "
        "in one process (median seconds per profile).",
        "",
        "| stage | before | after |",
        "|---|---|---|",
    ]
    for stage in stages:
        b, a = s["before"]["stages_s"].get(stage, 0.0), s["after"]["stages_s"].get(stage, 0.0)
        lines.append(f"| {stage} | {b:.1f} | {a:.1f} |")
    b, a = s["before"]["median_wall_s"], s["after"]["median_wall_s"]
    ratios = ", ".join(f"{x:.2f}" for x in result["speedup_per_round"])
    median = np.median(result["speedup_per_round"])
    lines += [
        f"| **total** | **{b:.1f}** | **{a:.1f}** |",
        "",
        f"before / after, per round: {ratios} (median {median:.2f}).",
        "With several export workers the stages overlap, so their seconds can add up to more "
        'than the wall time ("other" then goes negative).',
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "profile_cost.json")
    args = parser.parse_args(argv)
    result = run(args)
    write_result(args.out, result, markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
