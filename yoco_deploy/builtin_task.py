"""A small built-in sentiment task for the offline quickstart: real English sentences.

Reviews are composed from templates, sentiment words, intensifiers, negation ("not",
"hardly", "far from", "anything but") and contrast, and labelled by the composition: a
negation flips the word after it; in "A, but B", "although A, B" and "I expected A, yet
B" the second clause decides, in "B, even though A" and "B, despite A" the *first* one
does, and "neither A nor B" negates both. Word counting is not enough, and which clause
decides depends on words far from it, so the full model does not reach 100% and smaller
sub-BERTs score lower (the point of the demo: budgets can be told apart at the top).
Written as GLUE-style TSV, so the same local-data path as SST-2 reads it.
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
NEGATIONS = ("not ", "hardly ", "never ", "far from ", "anything but ", "not at all ")
VERBS = ("is", "was", "feels", "seemed")
OPENERS = ("", "", "Honestly, ", "Overall, ", "To be fair, ", "In the end, ")


def _clause(rng: np.random.Generator, positive: bool | None = None) -> tuple[str, int]:
    """A clause and its sentiment; ``positive`` fixes the sentiment it must express."""
    negate = rng.random() < 0.35
    if positive is None:
        positive = bool(rng.integers(2))
    word_positive = positive != negate
    word = rng.choice(POSITIVE if word_positive else NEGATIVE)
    subject, verb = rng.choice(SUBJECTS), rng.choice(VERBS)
    neg = rng.choice(NEGATIONS) if negate else ""
    text = f"{subject} {verb} {neg}{rng.choice(INTENSIFIERS)}{word}"
    return text, int(positive)


def _adjective(rng: np.random.Generator, positive: bool) -> str:
    return str(rng.choice(POSITIVE if positive else NEGATIVE))


def _review(rng: np.random.Generator) -> tuple[str, int]:
    kind = rng.random()
    first, label = _clause(rng)
    if kind < 0.25:  # a single clause
        return first, label
    second, second_label = _clause(rng)
    if kind < 0.40:  # "A, but B": B decides
        return f"{first}, but {second}", second_label
    if kind < 0.50:  # "although A, B": B decides
        return f"although {first}, {second}", second_label
    if kind < 0.60:  # "I expected A, yet B": B decides
        return f"I expected that {first}, yet {second}", second_label
    if kind < 0.72:  # "B, even though A": the first clause decides
        return f"{first}, even though {second}", label
    if kind < 0.80:  # "B, despite A": the first clause decides
        return f"{first}, despite how {_adjective(rng, not label)} the rest was", label
    if kind < 0.88:  # agreement: both clauses say the same
        agree, _ = _clause(rng, positive=bool(label))
        return f"{first}, and {agree}", label
    # "neither X nor Y": negates two words of the same polarity
    positive = bool(rng.integers(2))
    subject = rng.choice(SUBJECTS)
    x, y = _adjective(rng, positive), _adjective(rng, positive)
    return f"{subject} was neither {x} nor {y}", int(not positive)


def make_examples(n: int, seed: int) -> list[tuple[str, int]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        text, label = _review(rng)
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
