"""A small built-in sentiment task for the offline quickstart: real English sentences.

Reviews are composed from templates, sentiment words, intensifiers, negation ("not",
"hardly", "never") and contrast ("but", "although"), and labelled by the composition: a
negation flips the word after it, and after "but" the second clause decides. Word
counting is not enough to solve it, so a sub-BERT with less attention capacity scores
lower (the point of the demo). Written as GLUE-style TSV, so the same local-data path
as SST-2 reads it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SUBJECTS = (
    "the film",
    "this movie",
    "the plot",
    "the acting",
    "the soundtrack",
    "the ending",
    "the script",
    "the cast",
    "the director's new picture",
    "the second half",
    "the dialogue",
    "the cinematography",
    "this sequel",
    "the story",
)
POSITIVE = (
    "moving",
    "delightful",
    "gripping",
    "funny",
    "beautiful",
    "clever",
    "charming",
    "memorable",
    "brilliant",
    "heartfelt",
    "sharp",
    "stunning",
)
NEGATIVE = (
    "dull",
    "clumsy",
    "tedious",
    "forgettable",
    "shallow",
    "predictable",
    "messy",
    "boring",
    "bland",
    "awkward",
    "lifeless",
    "tiresome",
)
INTENSIFIERS = ("", "", "really ", "quite ", "truly ", "rather ", "surprisingly ")
NEGATIONS = ("not ", "hardly ", "never ")
VERBS = ("is", "was", "feels", "seemed")
OPENERS = ("", "", "Honestly, ", "Overall, ", "To be fair, ", "In the end, ")


def _clause(rng: np.random.Generator) -> tuple[str, int]:
    positive = bool(rng.integers(2))
    word = rng.choice(POSITIVE if positive else NEGATIVE)
    negate = rng.random() < 0.35
    subject, verb = rng.choice(SUBJECTS), rng.choice(VERBS)
    neg = rng.choice(NEGATIONS) if negate else ""
    text = f"{subject} {verb} {neg}{rng.choice(INTENSIFIERS)}{word}"
    return text, int(positive != negate)


def make_examples(n: int, seed: int) -> list[tuple[str, int]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        first, label = _clause(rng)
        kind = rng.random()
        if kind < 0.3:  # "A, but B": B decides
            second, label = _clause(rng)
            text = f"{first}, but {second}"
        elif kind < 0.45:  # "Although A, B": B decides
            second, label = _clause(rng)
            text = f"although {first}, {second}"
        else:
            text = first
        sentence = rng.choice(OPENERS) + text + "."
        out.append((sentence[0].upper() + sentence[1:], label))
    return out


def write_task(directory: Path, n_train: int = 3000, n_dev: int = 500, seed: int = 0) -> Path:
    """Write train.tsv and dev.tsv (GLUE SST-2 format) into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name, n, s in (("train", n_train, seed), ("dev", n_dev, seed + 1)):
        rows = ["sentence\tlabel"] + [f"{t}\t{y}" for t, y in make_examples(n, s)]
        (directory / f"{name}.tsv").write_text("\n".join(rows) + "\n")
    return directory
