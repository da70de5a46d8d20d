"""The GPU side of yoco-deploy on one card, in a few minutes, with no network.

    bash bench/gpu_check.sh            # on the GPU machine (writes $OUT/gpu_check.json)
    python bench/gpu_check.py --smoke  # anywhere: tiny sizes, CPU allowed (checks the script)

What it measures, on a MiniLM-shaped super-BERT (6 layers, 384 hidden, 12 heads, FFN
1536; random weights: throughput depends on shapes) and the built-in sentiment task:

1. super-BERT training steps in bf16 (the sandwich rule: 4 sub-BERTs a step): tokens/s
   and peak memory; and that a run stopped at a checkpoint and resumed ends with the
   same weights as one run straight through (max abs difference; 0 on a deterministic
   card, else reported);
2. search-split evaluation throughput of the super-BERT evaluator (sub-BERTs a second);
3. the PyTorch side of export: extraction and ONNX export of a sub-BERT from the GPU,
   validated against PyTorch with ONNX Runtime's CPU provider.

Needs torch, transformers, accelerate, onnx, onnxruntime, tokenizers, pydantic, typer,
rich, pyyaml, safetensors, scikit-learn, scipy, matplotlib; `datasets` is not needed
(local data). Results are JSON with the card's name.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT


def write_model(folder: Path, data_dir: Path, smoke: bool) -> Path:
    """A MiniLM-shaped BERT with random weights and a word-level vocabulary of the task."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    words = set()
    for split in ("train", "dev"):
        for line in (data_dir / f"{split}.tsv").read_text().splitlines()[1:]:
            words.update(line.split("\t")[0].lower().replace(",", " ,").replace(".", " .").split())
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(words)]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    size = (2, 64, 4, 128) if smoke else (6, 384, 12, 1536)
    config = BertConfig(
        vocab_size=len(vocab),
        num_hidden_layers=size[0],
        hidden_size=size[1],
        num_attention_heads=size[2],
        intermediate_size=size[3],
        max_position_embeddings=128,
        num_labels=2,
    )
    BertForSequenceClassification(config).save_pretrained(folder)
    return folder


def train_config(model: Path, data: Path, out: Path, args) -> dict:
    return {
        "model": str(model),
        "task": "sst2",
        "data_dir": str(data),
        "output_dir": str(out),
        "max_seq_len": args.seq_len,
        "batch_size": args.batch_size,
        "sampling": "sandwich",
        "pooling": "mean",
        "reorder": False,
        "max_eval": 64,
        "checkpoint_every": args.steps // 2,
        "log_every": max(1, args.steps // 10),
        "mixed_precision": args.precision,
        "phases": [{"name": "all", "heads": "all", "ffn": "all", "depth": "all", "epochs": 1.0}],
    }


def check_training(model: Path, data: Path, work: Path, args, keep: dict) -> dict:
    import torch
    from safetensors.torch import load_file

    from yoco_deploy.train.config import parse_config
    from yoco_deploy.train.trainer import Trainer

    def trainer(out: Path) -> Trainer:
        return Trainer(parse_config(train_config(model, data, out, args)), log=lambda s: None)

    straight = trainer(work / "a")
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    straight.train(stop_at=args.steps)
    seconds = time.perf_counter() - started
    keep["trainer"] = straight
    steps = straight.step
    tokens = steps * args.batch_size * args.seq_len * (2 + 2)  # sandwich: max, min, 2 random
    interrupted = trainer(work / "b")
    interrupted.train(stop_at=args.steps // 2)
    resumed = trainer(work / "b")
    resumed.train(resume=True, stop_at=args.steps)
    a = load_file(str(work / "a" / "checkpoint" / "model.safetensors"))
    b = load_file(str(work / "b" / "checkpoint" / "model.safetensors"))
    diff = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    return {
        "steps": steps,
        "seconds": seconds,
        "steps_per_s": steps / seconds,
        "sub_bert_tokens_per_s": tokens / seconds,
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
        "resume_max_abs_weight_diff": diff,
        "resume_same_step": resumed.step == straight.step,
        "note": "includes the evaluation of 4 representative sub-BERTs at the checkpoint",
    }


def supernet(trainer, seq_len: int):
    from yoco_deploy.deploy.supernet import Supernet

    return Supernet(trainer.super_bert, trainer.tokenizer, trainer.data, None, seq_len)


def check_evaluation(net, device: str, n: int) -> dict:
    from yoco_deploy.deploy.supernet import SuperBertEvaluator

    evaluator = SuperBertEvaluator(net, device=device)
    archs = net.super_bert.space.sampler(0).sample_many(n)
    evaluator.evaluate(archs[0], "search")  # warm-up (kernels, allocator)
    started = time.perf_counter()
    for arch in archs:
        evaluator.evaluate(arch, "search")
    seconds = time.perf_counter() - started
    examples = len(evaluator.splits["search"]["labels"])
    return {
        "sub_berts": n,
        "examples_each": examples,
        "sub_berts_per_s": n / seconds,
        "examples_per_s": n * examples / seconds,
    }


def check_export(net, work: Path, device: str) -> dict:
    from yoco_deploy.export.sub_bert import ExportOptions, export_sub_bert

    sb = net.super_bert.to(device).eval()
    arch = sb.space.sampler(1).sample()
    started = time.perf_counter()
    report = export_sub_bert(sb, arch, work / "export", ExportOptions.for_format("fp32"))
    return {
        "arch": arch.short(),
        "seconds": time.perf_counter() - started,
        "validation": report.validation,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="Tiny sizes; CPU allowed.")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--evaluations", type=int, default=40)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "gpu_check.json")
    args = parser.parse_args()
    import torch

    from yoco_deploy.train.builtin_task import write_task

    cuda = torch.cuda.is_available()
    if not cuda and not args.smoke:
        print("error: no CUDA device here (use --smoke to check the script on a CPU)")
        return 1
    if args.smoke:
        args.steps, args.batch_size, args.seq_len, args.evaluations = 8, 8, 32, 3
    args.precision = "bf16" if cuda else "no"
    device = "cuda" if cuda else "cpu"
    result: dict = {
        "command": "python bench/gpu_check.py " + " ".join(sys.argv[1:]),
        "device": torch.cuda.get_device_name(0) if cuda else "cpu (smoke)",
        "torch": torch.__version__,
        "precision": args.precision,
        "batch_size": args.batch_size,
        "seq_len": args.seq_len,
    }
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="yoco-gpu-check-") as tmp:
        work = Path(tmp)
        data = write_task(work / "data", n_train=args.steps * args.batch_size + 400, n_dev=200)
        model = write_model(work / "model", data, args.smoke)
        keep: dict = {}
        net = lambda: supernet(keep["trainer"], args.seq_len)  # noqa: E731
        for name, check in (
            ("training", lambda: check_training(model, data, work, args, keep)),
            ("evaluation", lambda: check_evaluation(net(), device, args.evaluations)),
            ("export", lambda: check_export(net(), work, device)),
        ):
            try:
                result[name] = check()
            except Exception as err:  # report every check, even after one fails
                result[name] = {"error": f"{type(err).__name__}: {err}"}
            print(json.dumps({name: result[name]}), flush=True)
    result["wall_s"] = time.perf_counter() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0 if all("error" not in result[k] for k in ("training", "evaluation", "export")) else 1


if __name__ == "__main__":
    sys.exit(main())
