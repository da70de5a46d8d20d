"""Does a sub-BERT's latency depend on the token ids it is fed? Measured per bundle.

    .venv/bin/python bench/token_values.py bundles/bench/* [--out bench/results/token_values.json]

The profiler and ship time every model on random ids drawn over the whole vocabulary
(``runner.make_feeds``); `bench/bundle_latency.py` and users feed other ids. Here each
bundle is timed, in one process without torch, beside the reference model its manifest
was timed beside, with the runner's own ``measure`` (each run paired with a reference
run), on three full-length (seq 128) inputs: random ids over the whole vocabulary,
random ids below 1000, and real SST-2 dev sentences tokenized by the bundle's tokenizer
back to back; each with denormals kept and flushed to zero
(``SessionSpec.flush_denormals``, ONNX Runtime's ``session.set_denormal_as_zero``), each
setting in its own process. Reported: the latency relative to the reference per input
and setting, --repeats times, and each input's ratio to the full-vocabulary one; and the
SST-2 dev accuracy under each setting, with whether the predictions are identical. A
timing job: run it alone.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from _common import ROOT

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
    from yoco_deploy import runtime as runner

    rng = np.random.default_rng(0)
    return {
        "full vocabulary": runner.make_feeds(1, SEQ)["input_ids"],
        "ids below 1000": rng.integers(1, 1000, size=(1, SEQ), dtype=np.int64),
        "SST-2 text": text_ids(bundle, SEQ),
    }


SETTINGS = {"kept": False, "flushed": True}  # denormals, as SessionSpec.flush_denormals


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
                [sys.executable, "-c", REF, str(bundle.resolve()), tmp], capture_output=True,
                text=True, check=True, cwd=ROOT / "bench",
            ).stdout.strip()  # fmt: skip
            rel: dict[str, dict[str, list[float]]] = {}
            accuracy: dict[str, float] = {}
            # one process per setting (the flush is a thread state that outlives a session),
            # alternating
            for repeat in range(args.repeats):
                for setting in SETTINGS:
                    out = json.loads(subprocess.run(
                        [sys.executable, __file__, "--child", str(bundle), ref, setting,
                         str(repeat == 0)],
                        capture_output=True, text=True, check=True,
                    ).stdout)  # fmt: skip
                    for name, value in out["rel"].items():
                        rel.setdefault(setting, {}).setdefault(name, []).append(value)
                    if "accuracy" in out:
                        accuracy[setting] = out["accuracy"]
                        accuracy.setdefault("predictions", []).append(out["predictions"])
            same = len({tuple(p) for p in accuracy.pop("predictions")}) == 1
            vs = {
                setting: {
                    k: float(np.median(v) / np.median(by_input["full vocabulary"]))
                    for k, v in by_input.items()
                }
                for setting, by_input in rel.items()
            }
            rows.append(
                {
                    "bundle": bundle.name,
                    "arch": manifest["arch"],
                    "manifest_session": manifest["session"],
                    "manifest_rel": manifest["measured_latency_ms"]["median"]
                    / manifest["timing"]["reference_ms"],
                    "rel": rel,
                    "vs_full_vocabulary": vs,
                    "dev_accuracy": accuracy,
                    "dev_predictions_identical": same,
                }
            )
            print(bundle.name, vs, accuracy, same, flush=True)
    from _common import machine_info

    result = {"benchmark": "token_values", "command": " ".join(sys.argv),
              "repeats": args.repeats, "machine": machine_info(), "rows": rows}  # fmt: skip
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    names = list(rows[0]["rel"]["kept"]) if rows else []
    lines = [
        f"Command: `{result['command']}`; {args.repeats} repeats per input and setting, each "
        "setting in its own process, alternating; runner `measure` (paired with the "
        f"reference, 60 runs); {result['machine']['cpu']}. Latency relative to the reference "
        "model (random weights), and each input's ratio to the whole-vocabulary one; "
        "`flushed` is `session.set_denormal_as_zero`.\n",
        "| bundle | manifest rel | denormals | "
        + " | ".join(f"{n}: rel (vs full vocabulary)" for n in names)
        + " | SST-2 dev accuracy |",
        "|---|---|---|" + "---|" * len(names) + "---|",
    ]
    for r in rows:
        for setting in SETTINGS:
            cells = [
                f"{np.median(r['rel'][setting][n]):.3f} "
                f"({r['vs_full_vocabulary'][setting][n] - 1:+.1%}, spread "
                f"{min(r['rel'][setting][n]):.3f}-{max(r['rel'][setting][n]):.3f})"
                for n in names
            ]
            same = " (identical predictions)" if r["dev_predictions_identical"] else ""
            lines.append(
                f"| {r['bundle']} | {r['manifest_rel']:.3f} | {setting} | "
                + " | ".join(cells)
                + f" | {r['dev_accuracy'][setting]:.4f}{same if setting == 'flushed' else ''} |"
            )
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


# run with bench/ as its folder, so the bench modules import as they do in a bench script
REF = r"""
import json, sys
from pathlib import Path
from _common import ROOT
from bundle_latency import reference_file
bundle = Path(sys.argv[1])
manifest = json.loads((bundle / "manifest.json").read_text())
print(reference_file(manifest, ROOT / "predictors", Path(sys.argv[2]) / bundle.name))
"""


def child(bundle: Path, ref: str, setting: str, with_accuracy: bool) -> None:
    """Times in a process without torch, as a device would."""
    from yoco_deploy import runtime as runner

    assert "torch" not in sys.modules
    manifest = json.loads((bundle / "manifest.json").read_text())
    spec = runner.SessionSpec.from_dict(
        {**manifest["session"], "flush_denormals": SETTINGS[setting]}
    )
    backend = runner.OrtBackend(spec)
    model, reference = backend.load(bundle / "model.onnx"), backend.load(Path(ref))
    base = runner.make_feeds(1, SEQ)  # the masks and segments; input_ids are replaced
    protocol = runner.Protocol(min_runs=60, max_runs=60)
    out: dict = {"rel": {}}
    for name, ids in inputs(bundle).items():
        stats = runner.measure(backend, model, {**base, "input_ids": ids}, protocol, reference)
        out["rel"][name] = stats.rel
    if with_accuracy:
        out.update(dev_accuracy(bundle, model))
    print(json.dumps(out))


def dev_accuracy(bundle: Path, session) -> dict:
    """SST-2 dev accuracy of the bundle's session, one sentence at a time (untimed)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(bundle / "tokenizer.json"))
    tok.enable_truncation(SEQ)
    predictions, labels = [], []
    for line in DEV.read_text().splitlines()[1:]:
        text, label = line.rsplit("\t", 1)
        e = tok.encode(text)
        feeds = {
            "input_ids": np.array([e.ids], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids], dtype=np.int64),
        }
        predictions.append(int(session.run(None, feeds)[0][0].argmax()))
        labels.append(int(label))
    accuracy = float(np.mean(np.array(predictions) == np.array(labels)))
    return {"accuracy": accuracy, "predictions": predictions}


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(Path(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5] == "True")
    else:
        main()
