"""Export speed: MiniLM and three sub-BERTs in torch eager and three ONNX Runtime forms.

    .venv/bin/python bench/export_speed.py            # or: make bench-export

For each model and batch size, the four variants (torch eager, ORT plain export, ORT with
transformer fusions, ORT int8) are timed round-robin in one process (drift and other
tenants' load hit them alike): warm-up, then --repeats timed runs each. ORT worker threads
do not spin (otherwise an idle session's spinning threads steal the cores of the next
one). Writes
bench/results/export_speed.json (machine, versions, every statistic) and a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from _common import RESULTS, machine_info, time_interleaved

from yoco_deploy.arch import Arch, LayerSpec
from yoco_deploy.costs import arch_costs
from yoco_deploy.export.sub_bert import ExportOptions, export_sub_bert
from yoco_deploy.export.to_onnx import ort_session
from yoco_deploy.model.extract import extract
from yoco_deploy.model.super_bert import SuperBert
from yoco_deploy.runtime import SessionSpec

VARIANTS = ("torch eager", "ORT plain", "ORT fused", "ORT int8")


def minilm_archs() -> dict[str, Arch]:
    return {
        "full (L6, 12/1536)": Arch.uniform(6, 12, 1536),
        "hetero L5": Arch(
            (
                LayerSpec(12, 1536),
                LayerSpec(8, 1152),
                LayerSpec(12, 768),
                LayerSpec(4, 1536),
                LayerSpec(8, 384),
            )
        ),
        "L4, 8/768": Arch.uniform(4, 8, 768),
        "min (L3, 4/384)": Arch.uniform(3, 4, 384),
    }


def prepare(sb: SuperBert, arch: Arch, work: Path, threads: int):
    """Export (validated) once; the torch model and one ORT session per variant."""
    export_sub_bert(sb, arch, work, ExportOptions(optimize=True, quantize="int8"))
    sessions = {
        name: ort_session(
            work / f"model{suffix}.onnx", SessionSpec(threads=threads, spinning="off")
        )
        for name, suffix in (("ORT plain", ""), ("ORT fused", ".opt"), ("ORT int8", ".int8"))
    }
    return extract(sb, arch), sessions


def workloads(dense, sessions, batch: int, seq: int):
    rng = np.random.default_rng(0)
    feeds = {
        "input_ids": rng.integers(1000, 29000, size=(batch, seq), dtype=np.int64),
        "attention_mask": np.ones((batch, seq), dtype=np.int64),
        "token_type_ids": np.zeros((batch, seq), dtype=np.int64),
    }
    tensors = {k: torch.from_numpy(v) for k, v in feeds.items()}

    def torch_run():
        with torch.inference_mode():
            dense(**tensors)

    fns = {"torch eager": torch_run}
    for name, session in sessions.items():
        fns[name] = lambda s=session: s.run(None, feeds)
    return fns


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--out", type=Path, default=RESULTS / "export_speed.json")
    parser.add_argument("--table-only", action="store_true", help="Re-render --out's table.")
    args = parser.parse_args(argv)
    if args.table_only:
        table = markdown(json.loads(args.out.read_text()))
        args.out.with_suffix(".md").write_text(table)
        print(table)
        return 0
    if args.repeats < 30:
        parser.error("--repeats must be at least 30")

    torch.set_num_threads(args.threads)
    started = time.time()
    sb = SuperBert.from_pretrained(args.model).eval()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, arch in minilm_archs().items():
            costs = arch_costs(arch, sb.dims, args.seq_len, 1)
            dense, sessions = prepare(sb, arch, Path(tmp) / arch.arch_id, args.threads)
            for batch in args.batches:
                fns = workloads(dense, sessions, batch, args.seq_len)
                stats = time_interleaved(fns, args.warmup, args.repeats)
                rows.append(
                    {
                        "model": label,
                        "arch": arch.to_dict(),
                        "arch_id": arch.arch_id,
                        "params": costs.params,
                        "gflops_batch1": costs.flops / 1e9,
                        "batch": batch,
                        "stats": {k: v.to_dict() for k, v in stats.items()},
                    }
                )
                line = ", ".join(f"{k} {v.median_ms:.1f}" for k, v in stats.items())
                print(f"{label:>20} batch {batch}: {line} ms", file=sys.stderr)
    result = {
        "benchmark": "export_speed",
        "command": "python bench/export_speed.py " + " ".join(argv or sys.argv[1:]),
        "machine": machine_info(),
        "threads": args.threads,
        "seq_len": args.seq_len,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "protocol": "variants interleaved round-robin within one process; ORT spinning off",
        "wall_s": round(time.time() - started, 1),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(result)
    args.out.with_suffix(".md").write_text(table)
    print(table)
    return 0


def markdown(result: dict) -> str:
    m = result["machine"]
    head = (
        f"Machine: {m['cpu']}, {m['logical_cores']} logical cores, {result['threads']} threads, "
        f"onnxruntime {m['onnxruntime']}, torch {m['torch']}; seq {result['seq_len']}; "
        f"{result['repeats']} timed runs after {result['warmup']} warm-up, interleaved; "
        f"median / p90 ms (max CV across variants in the last column).\n\n"
    )
    cols = " | ".join(VARIANTS)
    lines = [
        f"| model | params | GFLOPs (batch 1) | batch | {cols} | max CV |",
        "|---" * (5 + len(VARIANTS)) + "|",
    ]
    for r in result["rows"]:
        s = r["stats"]
        cells = " | ".join(f"{s[v]['median_ms']:.1f} / {s[v]['p90_ms']:.1f}" for v in VARIANTS)
        cv = max(s[v]["cv"] for v in VARIANTS)
        lines.append(
            f"| {r['model']} | {r['params'] / 1e6:.1f}M | {r['gflops_batch1']:.2f} | "
            f"{r['batch']} | {cells} | {cv:.1%} |"
        )
    return head + "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
