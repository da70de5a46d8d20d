"""Test helpers: tiny random BERTs and seeded inputs (never the hub)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import torch
from torch.utils.flop_counter import FlopCounterMode

from yoco_deploy.costs import arch_costs
from yoco_deploy.model.extract import extract

TINY = dict(
    vocab_size=120,
    hidden_size=48,
    num_hidden_layers=4,
    num_attention_heads=6,
    intermediate_size=96,
    max_position_embeddings=140,
    num_labels=3,
)


def tiny_bert(seed: int = 0, **overrides):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    model = BertForSequenceClassification(BertConfig(**{**TINY, **overrides}))
    with torch.no_grad():  # non-trivial LayerNorms and biases, so slicing errors show
        for name, p in model.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def some_archs(space, n_random: int = 5, seed: int = 3):
    """The min, the max and ``n_random`` seeded random sub-BERTs."""
    return [space.min_arch(), space.max_arch(), *space.sampler(seed).sample_many(n_random)]


def batch_inputs(vocab: int, batch: int = 3, seq: int = 20, seed: int = 0):
    from yoco_deploy.export.to_onnx import sample_inputs

    return {k: torch.from_numpy(v) for k, v in sample_inputs(vocab, batch, seq, seed).items()}


def check_sub_bert(sb, arch, x):
    """Slice == extracted logits; params exact; FLOPs within 2% of torch's counter."""
    sb.set_active(arch)
    dense = extract(sb, arch)
    with torch.no_grad():
        sliced = sb(**x)
        standalone = dense(**x).logits
    assert (sliced - standalone).abs().max().item() <= 1e-5
    costs = arch_costs(
        arch, sb.dims, seq_len=x["input_ids"].shape[1], batch=x["input_ids"].shape[0]
    )
    n_params = sum(p.numel() for p in dense.parameters())
    assert costs.params == n_params
    emb = sum(p.numel() for p in dense.bert.embeddings.parameters())
    assert costs.params_non_embedding == n_params - emb
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        dense(**x)
    measured = counter.get_total_flops()
    assert abs(costs.flops - measured) / measured <= 0.02, (costs.flops, measured)
    return dense


class FakeBackend:
    """A device whose latency is a known function of the model file (nn-Meter's
    DebugBackend idea): deterministic, instant, and able to drift on demand."""

    def __init__(self, base_ms=None, drift=None):
        # latency grows with the ONNX file size (~parameters) plus a fixed overhead
        self.base_ms = base_ms or (lambda path: 0.5 + path.stat().st_size / 2e5)
        self.drift = drift or (lambda call: 1.0)
        self.calls = 0
        self.loaded = []

    def load(self, path):
        self.loaded.append(path)
        return path

    def time_one(self, handle, feeds):
        self.calls += 1
        return self.base_ms(handle) * self.drift(self.calls)


POSITIVE = ("good", "great", "fine", "lovely", "superb", "happy")
NEGATIVE = ("bad", "awful", "poor", "dull", "sad", "boring")
NEUTRAL = ("the", "movie", "was", "plot", "actors", "and", "quite", "really", "film", "story")


def tiny_vocab() -> list[str]:
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *POSITIVE, *NEGATIVE, *NEUTRAL]


def tiny_sentences(n: int, seed: int) -> list[tuple[str, int]]:
    """Sentences whose label is the majority sentiment of their sentiment words."""
    import random

    rng = random.Random(seed)
    out = []
    for _ in range(n):
        label = rng.randint(0, 1)
        major, minor = (POSITIVE, NEGATIVE) if label else (NEGATIVE, POSITIVE)
        words = [rng.choice(NEUTRAL) for _ in range(rng.randint(3, 8))]
        words += [rng.choice(major) for _ in range(2)] + [
            rng.choice(minor) for _ in range(rng.randint(0, 1))
        ]
        rng.shuffle(words)
        out.append((" ".join(words), label))
    return out


def write_tiny_task(root, n_train: int = 240, n_dev: int = 60):
    """A tiny model directory with a tokenizer, and SST-2-format TSV data."""
    from pathlib import Path

    from transformers import BertTokenizerFast

    root = Path(root)
    model_dir, data_dir = root / "tiny-bert", root / "data"
    model_dir.mkdir(parents=True, exist_ok=True)
    data_dir.mkdir(parents=True, exist_ok=True)
    vocab = model_dir / "vocab.txt"
    vocab.write_text("\n".join(tiny_vocab()) + "\n")
    words = tiny_vocab()
    BertTokenizerFast(vocab={w: i for i, w in enumerate(words)}).save_pretrained(model_dir)
    tiny_bert(vocab_size=len(tiny_vocab()), num_labels=2).save_pretrained(model_dir)
    for name, n, seed in (("train", n_train, 0), ("dev", n_dev, 1)):
        rows = ["sentence\tlabel"] + [f"{s}\t{y}" for s, y in tiny_sentences(n, seed)]
        (data_dir / f"{name}.tsv").write_text("\n".join(rows) + "\n")
    return model_dir, data_dir


def plain_transformers_logits(path, x, tmp_path):
    """Logits of an extracted sub-BERT loaded by plain transformers in a subprocess where
    yoco_deploy cannot be imported (what a user without yoco-deploy gets)."""
    torch.save(dict(x), tmp_path / "inputs.pt")
    script = textwrap.dedent(
        f"""
        import sys
        class Block:  # make yoco_deploy unimportable, even through the editable install
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "yoco_deploy":
                    raise ModuleNotFoundError("blocked: " + name)
        sys.meta_path.insert(0, Block())
        try:
            import yoco_deploy
            sys.exit("yoco_deploy is importable")
        except ModuleNotFoundError:
            pass
        import torch
        from transformers import AutoModelForSequenceClassification
        model = AutoModelForSequenceClassification.from_pretrained({str(path)!r},
                                                                   trust_remote_code=True)
        x = torch.load({str(tmp_path / "inputs.pt")!r}, weights_only=True)
        with torch.no_grad():
            logits = model.eval()(**x).logits
        torch.save(logits, {str(tmp_path / "out.pt")!r})
        assert "yoco_deploy" not in sys.modules
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_MODULES_CACHE"] = str(tmp_path / "hf_modules")
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return torch.load(tmp_path / "out.pt", weights_only=True)


def ship_tiny_bundle(model_dir, data, folder, arch=None):
    """A bundle shipped from the tiny BERT under a parameter budget (no latency predictor;
    an untrained model, so the quality floor is 0)."""
    from yoco_deploy.deploy.budgets import CostModel, Target
    from yoco_deploy.deploy.ship import ShipSettings, ship_target
    from yoco_deploy.model.loading import load_tokenizer
    from yoco_deploy.model.super_bert import SuperBert

    task = data.task
    sb = SuperBert.from_pretrained(str(model_dir), task.num_labels, label_names=task.label_names)
    sb.eval()
    target = Target("tiny-cpu", {"params": 1e9})
    return ship_target(
        sb, load_tokenizer(str(model_dir)), data, CostModel(target, sb.space),
        [arch or sb.space.min_arch()], folder, ShipSettings(seq_len=16, min_metric=0.0),
        say=lambda s: None,
    )  # fmt: skip
