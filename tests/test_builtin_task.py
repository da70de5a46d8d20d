"""The built-in demo task: deterministic, balanced, and shifted in vocabulary at dev."""

import re

from yoco_deploy.train.builtin_task import (
    NEGATIVE,
    POSITIVE,
    UNSEEN_NEGATIVE,
    UNSEEN_POSITIVE,
    make_examples,
    write_task,
)


def _words(rows):
    return {w for text, _ in rows for w in re.findall(r"[a-z']+", text.lower())}


def test_dev_speaks_words_train_never_shows(tmp_path):
    write_task(tmp_path, n_train=600, n_dev=300)
    read = [
        [line.split("\t") for line in (tmp_path / f"{s}.tsv").read_text().splitlines()[1:]]
        for s in ("train", "dev")
    ]
    train, dev = _words(read[0]), _words(read[1])
    unseen = set(UNSEEN_POSITIVE + UNSEEN_NEGATIVE)
    assert not train & unseen
    assert len(dev & unseen) >= 15  # most of the held-out lexicon appears
    assert set(POSITIVE + NEGATIVE) <= train
    assert not unseen & set(POSITIVE + NEGATIVE)


def test_examples_are_deterministic_and_balanced():
    rows = make_examples(2000, seed=3, unseen=0.5)
    assert rows == make_examples(2000, seed=3, unseen=0.5)
    share = sum(y for _, y in rows) / len(rows)
    assert 0.45 < share < 0.55


def test_labels_follow_the_composition():
    rows = make_examples(3000, seed=0)
    positive, negative = set(POSITIVE), set(NEGATIVE)
    checked = 0
    for text, label in rows:
        words = re.findall(r"[a-z]+", text.lower())
        if "neither" in words:  # "neither X nor Y" flips X's polarity
            x = words[words.index("neither") + 1]
            assert label == int(x in negative), text
            checked += 1
        elif "," not in text and not {"not", "hardly", "never", "far", "anything"} & set(words):
            word = words[-1]  # a single unnegated clause ends with its sentiment word
            if word in positive | negative:
                assert label == int(word in positive), text
                checked += 1
    assert checked > 300
