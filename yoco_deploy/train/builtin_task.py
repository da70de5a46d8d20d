"""A small built-in sentiment task for the offline quickstart: real English sentences.

Reviews are composed from templates, sentiment words, intensifiers, negation ("not",
"hardly", "far from", "anything but") and contrast, and labelled by the composition: a
negation flips the word after it; in "A, but B", "although A, B" and "I expected A, yet
B" the second clause decides, in "B, even though A" and "B, despite A" the *first* one
does, and "neither A nor B" negates both. Word counting is not enough, and which clause
decides depends on words far from it.

The rules alone are learnt perfectly by the full model, so the dev split also speaks a
vocabulary the training split never shows: half of its sentiment words come from a
held-out lexicon ("superb", "dreary"), as a deployed model meets words its fine-tuning
data lacked. Only what the pretrained layers know about those words carries over, and
shallower, narrower sub-BERTs keep less of it, so the full model stays below 100% and
smaller budgets score lower: the point of the demo is that budgets can be told apart at
the top. Written as GLUE-style TSV, so the same local-data path as SST-2 reads it.
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
# Dev-only sentiment words: the split's vocabulary shift (see the module docstring).
UNSEEN_POSITIVE = (
    "superb",
    "wonderful",
    "touching",
    "witty",
    "inventive",
    "engaging",
    "thrilling",
    "lovely",
    "splendid",
    "riveting",
)
UNSEEN_NEGATIVE = (
    "dreary",
    "sloppy",
    "monotonous",
    "insipid",
    "pointless",
    "clunky",
    "stale",
    "muddled",
    "overlong",
    "lazy",
)
INTENSIFIERS = ("", "", "really ", "quite ", "truly ", "rather ", "surprisingly ")
NEGATIONS = ("not ", "hardly ", "never ", "far from ", "anything but ", "not at all ")
VERBS = ("is", "was", "feels", "seemed")
OPENERS = ("", "", "Honestly, ", "Overall, ", "To be fair, ", "In the end, ")


class _Composer:
    """Composes labelled reviews; ``unseen`` is the share of sentiment words drawn from
    the held-out lexicon (0 for the training split)."""

    def __init__(self, rng: np.random.Generator, unseen: float):
        self.rng, self.unseen = rng, unseen

    def word(self, positive: bool) -> str:
        held_out = self.unseen > 0 and self.rng.random() < self.unseen
        if held_out:
            return str(self.rng.choice(UNSEEN_POSITIVE if positive else UNSEEN_NEGATIVE))
        return str(self.rng.choice(POSITIVE if positive else NEGATIVE))

    def clause(self, positive: bool | None = None) -> tuple[str, int]:
        """A clause and its sentiment; ``positive`` fixes the sentiment it must express."""
        rng = self.rng
        negate = rng.random() < 0.35
        if positive is None:
            positive = bool(rng.integers(2))
        word = self.word(positive != negate)
        subject, verb = rng.choice(SUBJECTS), rng.choice(VERBS)
        neg = rng.choice(NEGATIONS) if negate else ""
        return f"{subject} {verb} {neg}{rng.choice(INTENSIFIERS)}{word}", int(positive)

    def review(self) -> tuple[str, int]:
        kind = self.rng.random()
        first, label = self.clause()
        if kind < 0.25:  # a single clause
            return first, label
        second, second_label = self.clause()
        if kind < 0.40:  # "A, but B": B decides
            return f"{first}, but {second}", second_label
        if kind < 0.50:  # "although A, B": B decides
            return f"although {first}, {second}", second_label
        if kind < 0.60:  # "I expected A, yet B": B decides
            return f"I expected that {first}, yet {second}", second_label
        if kind < 0.72:  # "B, even though A": the first clause decides
            return f"{first}, even though {second}", label
        if kind < 0.80:  # "B, despite A": the first clause decides
            return f"{first}, despite how {self.word(not label)} the rest was", label
        if kind < 0.88:  # agreement: both clauses say the same
            agree, _ = self.clause(positive=bool(label))
            return f"{first}, and {agree}", label
        # "neither X nor Y": negates two words of the same polarity
        positive = bool(self.rng.integers(2))
        subject = self.rng.choice(SUBJECTS)
        x, y = self.word(positive), self.word(positive)
        return f"{subject} was neither {x} nor {y}", int(not positive)


def make_examples(n: int, seed: int, unseen: float = 0.0) -> list[tuple[str, int]]:
    rng = np.random.default_rng(seed)
    composer = _Composer(rng, unseen)
    out = []
    for _ in range(n):
        text, label = composer.review()
        sentence = rng.choice(OPENERS) + text + "."
        out.append((sentence[0].upper() + sentence[1:], label))
    return out


# Half of the dev split's sentiment words are ones training never shows.
DEV_UNSEEN = 0.5


def write_task(directory: Path, n_train: int = 3000, n_dev: int = 500, seed: int = 0) -> Path:
    """Write train.tsv and dev.tsv (GLUE SST-2 format) into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    splits = (("train", n_train, seed, 0.0), ("dev", n_dev, seed + 1, DEV_UNSEEN))
    for name, n, s, unseen in splits:
        rows = ["sentence\tlabel"] + [f"{t}\t{y}" for t, y in make_examples(n, s, unseen)]
        (directory / f"{name}.tsv").write_text("\n".join(rows) + "\n")
    return directory
