"""What the tests share (no test module imports another): tiny random BERTs and seeded
inputs (never the hub), the command line as a user runs it, a lock held elsewhere,
synthetic latency predictors and a synthetic search objective."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import BertConfig
from typer.testing import CliRunner

from yoco_deploy.cli.main import app
from yoco_deploy.costs import arch_costs
from yoco_deploy.device.features import FEATURES, feature_vector
from yoco_deploy.device.predictor import LatencyPredictor, TrainingData, select_and_fit
from yoco_deploy.model.extract import extract
from yoco_deploy.space import SearchSpace

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


def ship_tiny_bundle(model_dir, data, folder, arch=None, fmt="int8"):
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
        [arch or sb.space.min_arch()], folder, ShipSettings(fmt=fmt, seq_len=16, min_metric=0.0),
        say=lambda s: None,
    )  # fmt: skip


# ---- the command line, as a user runs it -------------------------------------------

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def assert_one_line_error(result, fragment):
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert fragment in lines[0]


# ---- a lock held by another process ----------------------------------------------------


def hold_in_another_process(lock_file, seconds=30):
    """A child process that takes the lock and sleeps (what a running command does)."""
    code = textwrap.dedent(
        f"""
        import time
        from yoco_deploy.util.lock import exclusive
        with exclusive({str(lock_file)!r}, "x"):
            print("held", flush=True)
            time.sleep({seconds})
        """
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    return child


# ---- latency predictors from synthetic timings --------------------------------------------

BASE = SearchSpace.from_config(BertConfig())


def synthetic(space, n, seed, noise=0.0):
    """Latency that is an exact positive combination of the features, plus noise."""
    rng = np.random.default_rng(seed)
    archs = space.sampler(seed).sample_many(n)
    weights = np.zeros(len(FEATURES))
    weights[[0, 3, 6, 7, 9]] = [1.0, 0.3, 4.0, 2.0, 3.0]
    x = np.stack([feature_vector(a, space.dims, 1, 128) for a in archs])
    ms = x @ weights * (1 + noise * rng.standard_normal(n))
    ref = np.full(n, 10.0)
    return TrainingData(archs, [(1, 128)] * n, ms / ref, ms, ref)


def make_predictor(space, tmp_path):
    data = synthetic(space, 40, 1, noise=0.02)
    model, selection = select_and_fit(data, space.dims)
    p = LatencyPredictor(
        model=model,
        space=space.shape_dict(),
        device={"name": "fake", "threads": 1},
        reference={
            "arch": space.min_arch().to_dict(),
            "median_ms": {"1x128": 10.0},
            "format": "int8",
        },
        profile={"path": "p", "sha256": "x", "rows": 40, "shapes": ["1x128"]},
        metrics={"selection": selection, "chosen": model["type"]},
        libraries={},
        created=0.0,
    )
    return p, p.save(tmp_path / "pred.json")


# ---- a synthetic search objective on the tiny space --------------------------------------

SPACE = SearchSpace.from_config(BertConfig(**TINY))


class Additive:
    """A synthetic objective: a seeded value per (layer, cell), summed over layers."""

    def __init__(self, seed=0):
        rng = np.random.default_rng(seed)
        self.value = rng.uniform(0.1, 1.0, size=(SPACE.dims.num_layers, len(SPACE.cells)))
        self.calls = 0

    def evaluate(self, arch, split):
        self.calls += 1
        return float(
            sum(
                self.value[i, SPACE.cells.index((la.heads, la.ffn))]
                for i, la in enumerate(arch.layers)
            )
        )


def max_body():
    from yoco_deploy.costs import arch_costs

    return arch_costs(SPACE.max_arch(), SPACE.dims).params_non_embedding
