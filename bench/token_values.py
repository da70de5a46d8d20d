"""Does a sub-BERT's latency depend on the token ids it is fed? Measured per bundle.

    .venv/bin/python bench/token_values.py bundles/bench/* [--out bench/results/token_values.json]

The profiler and ship time every model on random ids drawn over the whole vocabulary
(``runner.make_feeds``); `bench/bundle_latency.py` and users feed other ids. Here each
bundle is timed, in one process without torch, beside the reference model its manifest
was timed beside, with the runner's own ``measure`` (each run paired with a reference
run), on three full-length (seq 128) inputs: random ids over the whole vocabulary,
random ids below 1000, and real SST-2 dev sentences tokenized by the bundle's tokenizer
back to back. Reported: the latency relative to the reference per input, --repeats times,
inputs interleaved, and each input's ratio to the full-vocabulary one. A timing job: run
it alone.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "yoco_deploy"))
DEV = ROOT.parent / "shared" / "data" / "glue" / "SST-2" / "dev.tsv"
SEQ = 128


def text_ids(bundle: Path, seq: int) -> np.ndarray:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(bundle / "tokenizer.json"))
    ids = [tok.token_to_id("[CLS]")]
    for line in DEV.read_text().splitlines()[1:]:
        ids += tok.encode(line.split("\t")[0], add_special_tokens=False).ids
        if len(ids) >= seq - 1:
            break
    return np.array([[*ids[: seq - 1], tok.token_to_id("[SEP]")]], dtype=np.int64)


def inputs(bundle: Path) -> dict[str, np.ndarray]:
    import runner

    rng = np.random.default_rng(0)
    return {
        "full vocabulary": runner.make_feeds(1, SEQ)["input_ids"],
        "ids below 1000": rng.integers(1, 1000, size=(1, SEQ), dtype=np.int64),
        "SST-2 text": text_ids(bundle, SEQ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundles", type=Path, nargs="+")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/token_values.json")
    args = parser.parse_args()
    import subprocess

    rows = []
    with tempfile.TemporaryDirectory(prefix="yoco-token-values-") as tmp:
        for bundle in args.bundles:
            manifest = json.loads((bundle / "manifest.json").read_text())
            ref = subprocess.run(
                [sys.executable, "-c", REF, str(bundle), tmp], capture_output=True, text=True,
                check=True,
            ).stdout.strip()  # fmt: skip
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(bundle), ref, str(args.repeats)],
                capture_output=True, text=True, check=True,
            ).stdout  # fmt: skip
            rel = json.loads(out)
            base = np.median(rel["full vocabulary"])
            rows.append(
                {
                    "bundle": bundle.name,
                    "arch": manifest["arch"],
                    "manifest_rel": manifest["measured_latency_ms"]["median"]
                    / manifest["timing"]["reference_ms"],
                    "rel": rel,
                    "vs_full_vocabulary": {k: float(np.median(v) / base) for k, v in rel.items()},
                }
            )
            print(bundle.name, rows[-1]["vs_full_vocabulary"], flush=True)
    from yoco_deploy.timing import machine_info

    result = {"benchmark": "token_values", "command": " ".join(sys.argv),
              "repeats": args.repeats, "machine": machine_info(), "rows": rows}  # fmt: skip
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    names = list(rows[0]["rel"]) if rows else []
    lines = [
        f"Command: `{result['command']}`; {args.repeats} interleaved repeats per input, "
        f"runner `measure` (paired with the reference); {result['machine']['cpu']}.\n",
        "| bundle | manifest rel | "
        + " | ".join(f"{n}: rel (vs full vocabulary)" for n in names)
        + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for r in rows:
        cells = [
            f"{np.median(r['rel'][n]):.3f} ({r['vs_full_vocabulary'][n] - 1:+.1%}, "
            f"spread {min(r['rel'][n]):.3f}-{max(r['rel'][n]):.3f})"
            for n in names
        ]
        lines.append(f"| {r['bundle']} | {r['manifest_rel']:.3f} | " + " | ".join(cells) + " |")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


REF = r"""
import json, sys
from pathlib import Path
sys.path.insert(0, "bench")
from bundle_latency import reference_file
bundle = Path(sys.argv[1])
manifest = json.loads((bundle / "manifest.json").read_text())
print(reference_file(manifest, Path("predictors"), Path(sys.argv[2]) / bundle.name))
"""


def child(bundle: Path, ref: str, repeats: int) -> None:
    """Times in a process without torch, as a device would."""
    import runner

    assert "torch" not in sys.modules
    manifest = json.loads((bundle / "manifest.json").read_text())
    spec = runner.SessionSpec.from_dict(manifest["session"])
    backend = runner.OrtBackend(spec)
    model, reference = backend.load(bundle / "model.onnx"), backend.load(Path(ref))
    base = runner.make_feeds(1, SEQ)  # the masks and segments; input_ids are replaced
    protocol = runner.Protocol(min_runs=60, max_runs=60)
    out: dict[str, list[float]] = {}
    for _ in range(repeats):
        for name, ids in inputs(bundle).items():
            stats = runner.measure(backend, model, {**base, "input_ids": ids}, protocol, reference)
            out.setdefault(name, []).append(stats["rel"])
    print(json.dumps(out))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
    else:
        main()
