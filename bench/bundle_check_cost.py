"""What checking a bundle on load costs, against one inference of the same bundle.

    .venv/bin/python bench/bundle_check_cost.py [BUNDLE] [--rounds 20]

``load_bundle`` (and ``classify``) hashes model.onnx and tokenizer.json against the
manifest before anything is classified, and keeps each digest in a cache keyed by the
file's inode, size, mtime and ctime, so an unchanged file is hashed once. Timed here in
interleaved rounds, in one process, each round doing:

- ``first load``: the checks with no cache (both files hashed; the manifest's digest);
- ``cached load``: the same checks answered by the cache;
- ``inference``: one batch-1 run of the bundle at its manifest's seq_len, in the session
  its manifest records (warm);
- ``open session``: building that ONNX Runtime session from model.onnx, which every load
  does anyway (the checks' cost beside the load's).

Reported: each one's median and p10-p90 over the rounds, and per round the ratio of each
check to that round's inference (median and p10-p90), the number the claim rests on.
BUNDLE: a bundle folder (default: the largest under demo-out/bundles). A timing job: run
it alone. Writes bench/results/bundle_check_cost.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import RESULTS, ROOT


def _default_bundle() -> Path:
    found = sorted(
        (p.parent for p in (ROOT / "demo-out" / "bundles").glob("*/manifest.json")),
        key=lambda b: (b / "model.onnx").stat().st_size,
    )
    if not found:
        sys.exit("error: no bundle under demo-out/bundles: run `make demo`, or name a bundle")
    return found[-1]


def _spread(values: list[float]) -> dict[str, float]:
    v = np.asarray(values)
    return {"median": float(np.median(v)), "p10": float(np.quantile(v, 0.1)),
            "p90": float(np.quantile(v, 0.9))}  # fmt: skip


def measure(bundle: Path, rounds: int, command: str) -> dict:
    from _common import machine_info

    from yoco_deploy import bundle as bundle_module
    from yoco_deploy.export.metadata import manifest_digest
    from yoco_deploy.manifest import read_json
    from yoco_deploy.runtime import make_feeds

    loaded = bundle_module.load_bundle(bundle)  # checks it once, as a user's load would
    manifest = loaded.manifest
    files = [bundle / "model.onnx", bundle / "tokenizer.json"]
    feeds = make_feeds(1, manifest.seq_len)
    feeds = {k: v for k, v in feeds.items() if k in loaded.inputs}

    def checks(fresh: bool) -> None:
        for f in files:
            bundle_module.verified_sha256(f, fresh=fresh)
        manifest_digest(read_json(bundle))

    def inference() -> None:
        loaded.session.run(None, feeds)

    def open_session() -> None:
        loaded.session_spec.load(bundle / "model.onnx")

    with tempfile.TemporaryDirectory(prefix="yoco-check-cost-") as cache:
        os.environ[bundle_module.CACHE_ENV] = cache
        while time.time() - max(f.stat().st_mtime for f in files) < 2.5:
            time.sleep(0.5)  # the cache remembers only settled files
        for _ in range(5):
            checks(True), checks(False), inference()  # warm: page cache, session
        work = {"first load": lambda: checks(True), "cached load": lambda: checks(False),
                "inference": inference, "open session": open_session}  # fmt: skip
        samples: dict[str, list[float]] = {name: [] for name in work}
        for _ in range(rounds):
            for name, fn in work.items():
                start = time.perf_counter()
                fn()
                samples[name].append((time.perf_counter() - start) * 1e3)
    ratios = {
        name: _spread([a / b for a, b in zip(samples[name], samples["inference"], strict=True)])
        for name in ("first load", "cached load", "open session")
    }
    return {
        "bundle": bundle.name,
        "files_mb": {f.name: round(f.stat().st_size / 1e6, 2) for f in files},
        "seq_len": manifest.seq_len,
        "session": manifest.session,
        "rounds": rounds,
        "ms": {name: _spread(v) for name, v in samples.items()},
        "ratio_to_inference": ratios,
        "machine": machine_info(),
        "command": command,
    }


def write_markdown(result: dict, path: Path) -> None:
    ms, ratio = result["ms"], result["ratio_to_inference"]
    threads = (result["session"] or {}).get("threads")
    lines = [
        "# What checking a bundle on load costs",
        "",
        f"`{result['command']}` on {result['machine']['cpu']}, "
        f"{result['rounds']} interleaved rounds in one process. Bundle `{result['bundle']}` "
        f"(model.onnx {result['files_mb']['model.onnx']} MB, tokenizer.json "
        f"{result['files_mb']['tokenizer.json']} MB); inference: batch 1, seq "
        f"{result['seq_len']}, {threads or 'default'} threads, the manifest's session.",
        "",
        "| | median ms | p10-p90 ms | / inference (median, p10-p90) |",
        "|---|---|---|---|",
    ]
    for name in ("first load", "cached load", "inference", "open session"):
        r = ratio.get(name)
        shown = f"{r['median']:.3f} ({r['p10']:.3f}-{r['p90']:.3f})" if r else ""
        shown = "1" if name == "inference" else shown
        lines.append(
            f"| {name} | {ms[name]['median']:.3f} | {ms[name]['p10']:.3f}-{ms[name]['p90']:.3f} "
            f"| {shown} |"
        )
    lines += [
        "",
        "first load: model.onnx and tokenizer.json hashed, the manifest's digest computed; "
        "cached load: the same answered by the verified-files cache (the file unchanged "
        "since it was hashed).",
    ]
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("bundle", nargs="?", type=Path, help="A bundle folder.")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--out", type=Path, default=RESULTS / "bundle_check_cost.json")
    args = parser.parse_args(argv)
    bundle = args.bundle or _default_bundle()
    if not (bundle / "manifest.json").is_file():
        sys.exit(f"error: {bundle} is not a bundle folder (no manifest.json)")
    shown = [a if not Path(a).is_absolute() else Path(a).name for a in (argv or sys.argv[1:])]
    result = measure(bundle, args.rounds, " ".join(["python bench/bundle_check_cost.py", *shown]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    write_markdown(result, args.out.with_suffix(".md"))
    print(args.out.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
