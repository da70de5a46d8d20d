"""Class names from the task (GLUE's) or from the data (string labels) reach the model."""

import pytest

from yoco_deploy.train.data import DataError, get_task, load_task

from helpers import ship_tiny_bundle, tiny_sentences, write_tiny_task


def write_split(folder, name, rows, sep, header):
    folder.mkdir(parents=True, exist_ok=True)
    lines = [sep.join(header)] + [sep.join(row) for row in rows]
    (folder / name).write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    "task, names",
    [
        ("sst2", ("negative", "positive")),
        ("cola", ("unacceptable", "acceptable")),
        ("mrpc", ("not_equivalent", "equivalent")),
        ("qqp", ("not_duplicate", "duplicate")),
        ("rte", ("entailment", "not_entailment")),
        ("mnli", ("entailment", "neutral", "contradiction")),
        ("stsb", None),
    ],
)
def test_glue_tasks_name_their_classes(task, names):
    assert get_task(task).label_names == names


def test_glue_tsv_keeps_glue_names(tmp_path):
    _, data_dir = write_tiny_task(tmp_path, n_train=40, n_dev=10)
    data = load_task("sst2", data_dir)
    assert data.task.label_names == ("negative", "positive")
    assert data.source == str(data_dir.resolve())


@pytest.mark.parametrize("suffix, sep", [(".csv", ","), (".tsv", "\t")])
def test_string_labels_become_the_class_names(tmp_path, suffix, sep):
    folder = tmp_path / "reviews"
    words = {0: "neg", 1: "pos"}
    for split, n, seed in (("train", 40, 0), ("dev", 12, 1)):
        rows = [(text, words[y]) for text, y in tiny_sentences(n, seed)]
        write_split(folder, f"{split}{suffix}", rows, sep, ("review", "sentiment"))
    data = load_task("sst2", folder, text_columns=["review"], label_column="sentiment")
    assert data.task.label_names == ("neg", "pos")  # sorted: neg is class 0
    expected = [y for _, y in tiny_sentences(12, 1)]
    assert data.dev.labels.tolist() == expected


def test_string_labels_reach_the_super_bert_config(tmp_path):
    from yoco_deploy.model.super_bert import SuperBert

    model_dir, _ = write_tiny_task(tmp_path, n_train=10, n_dev=4)
    sb = SuperBert.from_pretrained(str(model_dir), 2, label_names=("neg", "pos"))
    assert sb.config.id2label == {0: "neg", 1: "pos"}
    assert sb.config.label2id == {"neg": 0, "pos": 1}
    sb.model.save_pretrained(tmp_path / "ckpt")  # a checkpoint keeps them
    again = SuperBert.from_pretrained(str(tmp_path / "ckpt"), 2)
    assert again.config.id2label == {0: "neg", 1: "pos"}


def test_string_labels_with_the_wrong_number_of_classes_are_one_clear_error(tmp_path):
    folder = tmp_path / "three"
    rows = [("good film", "pos"), ("bad film", "neg"), ("a film", "meh")]
    for split in ("train", "dev"):
        write_split(folder, f"{split}.csv", rows, ",", ("text", "label"))
    with pytest.raises(DataError, match="3 classes, but task sst2 has 2"):
        load_task("sst2", folder, text_columns=["text"], label_column="label")


def test_a_dev_label_unseen_in_train_is_named(tmp_path):
    folder = tmp_path / "unseen"
    write_split(folder, "train.csv", [("good", "pos"), ("bad", "neg")], ",", ("text", "label"))
    write_split(folder, "dev.csv", [("fine", "okay")], ",", ("text", "label"))
    with pytest.raises(DataError, match="label 'okay' is not one of"):
        load_task("sst2", folder, text_columns=["text"], label_column="label")


@pytest.mark.parametrize("suffix, sep", [(".csv", ","), (".tsv", "\t")])
def test_string_labels_reach_the_bundle_and_the_api(tmp_path, suffix, sep):
    import json

    from yoco_deploy import load_bundle

    model_dir, _ = write_tiny_task(tmp_path, n_train=10, n_dev=4)
    folder = tmp_path / "reviews"
    for split, n, seed in (("train", 40, 0), ("dev", 12, 1)):
        rows = [(text, ("neg", "pos")[y]) for text, y in tiny_sentences(n, seed)]
        write_split(folder, f"{split}{suffix}", rows, sep, ("review", "sentiment"))
    data = load_task("sst2", folder, text_columns=["review"], label_column="sentiment")
    shipped = ship_tiny_bundle(model_dir, data, tmp_path / "bundles")
    config = json.loads((shipped.path / "config.json").read_text())
    assert config["id2label"] == {"0": "neg", "1": "pos"} and shipped.manifest.labels == [
        "neg",
        "pos",
    ]
    bundle = load_bundle(shipped.path)
    texts = ["good film", "bad film", "a film of some length, neither good nor bad"]
    predictions = bundle.classify(texts)
    for p in predictions:  # each name is the class its own logits pick
        assert p.name == ("neg", "pos")[p.label]
        assert p.label == max((0, 1), key=p.logits.__getitem__)
    # batch by batch: two texts then one give what those two batches give on their own
    assert bundle.classify(texts, batch_size=2) == bundle.classify(texts[:2]) + bundle.classify(
        texts[2:]
    )


def test_glue_names_as_labels_keep_glue_order(tmp_path):
    folder = tmp_path / "pairs"
    rows = [("a", "b", "equivalent"), ("c", "d", "not_equivalent"), ("e", "f", "equivalent")]
    for split in ("train", "dev"):
        write_split(folder, f"{split}.csv", rows, ",", ("s1", "s2", "label"))
    data = load_task("mrpc", folder, text_columns=["s1", "s2"], label_column="label")
    # sorted, "equivalent" would be class 0 and F1 would score the wrong class
    assert data.task.label_names == ("not_equivalent", "equivalent")
    assert data.dev.labels.tolist() == [1, 0, 1]


def test_an_f1_task_refuses_words_it_cannot_order(tmp_path):
    folder = tmp_path / "pairs"
    rows = [("a", "b", "same"), ("c", "d", "different")]
    for split in ("train", "dev"):
        write_split(folder, f"{split}.csv", rows, ",", ("s1", "s2", "label"))
    with pytest.raises(DataError, match="positive class"):
        load_task("mrpc", folder, text_columns=["s1", "s2"], label_column="label")


def test_cli_ship_and_search_print_json(tmp_path):
    """`ship --json` prints the bundle summary (the rows of summary.json), `search
    --no-ship --json` the chosen sub-BERT per target; notes stay on stderr."""
    import json

    from typer.testing import CliRunner

    from yoco_deploy.cli.main import app

    model_dir, data_dir = write_tiny_task(tmp_path, n_train=60, n_dev=20)
    common = ["--supernet", str(model_dir), "--task", "sst2", "--data-dir", str(data_dir)]
    arch = '{"layers": [{"heads": 2, "ffn": 24}, {"heads": 6, "ffn": 96}]}'
    shipped = CliRunner().invoke(
        app,
        ["ship", *common, "--target", "tiny:params=3M", "--arch", arch, "--seq-len", "16",
         "--min-metric", "0", "--bundles", str(tmp_path / "b"), "--json"],
    )  # fmt: skip
    assert shipped.exit_code == 0, shipped.output
    rows = json.loads(shipped.stdout)
    assert rows == json.loads((tmp_path / "b" / "summary.json").read_text())
    assert rows[0]["labels"] == ["negative", "positive"] and rows[0]["target"] == "tiny:params=3M"
    searched = CliRunner().invoke(
        app,
        ["search", *common, "--target", "tiny:params=3M", "--evaluations", "4", "--no-ship",
         "--seq-len", "16", "--out", str(tmp_path / "s"), "--json"],
    )  # fmt: skip
    assert searched.exit_code == 0, searched.output
    (best,) = json.loads(searched.stdout)
    assert best["target"] == "tiny:params=3M" and best["costs"]["params"] <= 3e6


def test_a_regression_bundle_classifies_as_its_score(tmp_path):
    from yoco_deploy import load_bundle

    from helpers import tiny_bert, tiny_vocab

    model_dir, _ = write_tiny_task(tmp_path, n_train=10, n_dev=4)
    tiny_bert(vocab_size=len(tiny_vocab()), num_labels=1).save_pretrained(model_dir)  # a score
    folder = tmp_path / "sts"
    rows = [(a, "a film", f"{i % 5}.0") for i, (a, _) in enumerate(tiny_sentences(30, 0))]
    for split in ("train", "dev"):
        write_split(folder, f"{split}.tsv", rows, "\t", ("sentence1", "sentence2", "score"))
    data = load_task("stsb", folder)
    assert data.task.label_names is None
    shipped = ship_tiny_bundle(model_dir, data, tmp_path / "bundles")
    assert shipped.manifest.labels == []
    (p,) = load_bundle(shipped.path).classify(["good film"])
    assert p.name == "score" and p.logits == (p.score,)


def test_the_card_names_every_budget_in_its_unit():
    from yoco_deploy.deploy.model_card import budgets_text

    relative = {"latency_share": 0.55, "params": 20e6}
    assert budgets_text(relative, 3.25) == (
        "latency 3.250 ms (55% of the max sub-BERT's), parameters 20 M"
    )
    assert budgets_text({"flops": 1.225e9, "size": 30}) == "FLOPs 1.23 G, file size 30 MB"
    assert budgets_text({}) == "none"
