"""Nothing edited, stale or foreign in an append-only log is trusted: a row without its
checksum is an edited row; a search log replays only the scores of the super-BERT, data
and space it records (a refitted predictor reuses them); profile-import locks, and
refuses rows its plan does not hold; an append writes a whole row or nothing; a
profile's rows and device.json are checked before a predictor is fitted on them."""

from __future__ import annotations

import errno
import json
import math
from types import SimpleNamespace

import pytest
from transformers import BertConfig

from yoco_deploy import runtime
from yoco_deploy.costs import arch_costs
from yoco_deploy.deploy.budgets import CostModel, Target
from yoco_deploy.deploy.search import Search, SearchError, SearchSettings
from yoco_deploy.deploy.search_log import SearchLog
from yoco_deploy.device.profile_store import (
    MEASUREMENTS,
    ProfileError,
    device_record,
    open_log,
    prepare_profile_dir,
)
from yoco_deploy.device.profiling import ProfileSettings, profile_device
from yoco_deploy.device.remote_profile import import_bundle
from yoco_deploy.device.sample_design import SpaceFillingDesign
from yoco_deploy.runtime import sealed
from yoco_deploy.space import SearchSpace
from yoco_deploy.util.lock import LockHeld

from helpers import (
    TINY,
    FakeBackend,
    assert_one_line_error,
    hold_in_another_process,
    run,
    write_tiny_task,
)

SPACE = SearchSpace.from_config(BertConfig(**TINY))
SETTINGS = ProfileSettings(n=20, shapes=((1, 16),), session=runtime.SessionSpec(threads=1))


# ---- made by hand, instantly: a profile, a bundle's results, a search log ---------------


def rows_for(n: int = 20) -> list[dict]:
    """A reference row and ``n`` model rows, latency growing with FLOPs (as profiled)."""
    archs = SpaceFillingDesign(SPACE, 0).sample(n)
    top = arch_costs(SPACE.max_arch(), SPACE.dims, seq_len=16).flops
    ref = {"kind": "reference", "key": runtime.job_key(runtime.REFERENCE_ID, 1, 16)}
    rows = [{**ref, "batch": 1, "seq_len": 16, "t": 0.0, "session": "s", "median_ms": 2.0}]
    for i, arch in enumerate(archs):
        rel = 0.2 + arch_costs(arch, SPACE.dims, seq_len=16).flops / top
        rows.append(
            {
                "kind": "model", "key": runtime.job_key(arch.arch_id, 1, 16),
                "arch_id": arch.arch_id, "arch": arch.to_dict(), "batch": 1, "seq_len": 16,
                "remeasured": False, "t": float(i + 1), "session": "s", "median_ms": 2 * rel,
                "p90_ms": 2 * rel, "cv": 0.0, "runs": 3, "ref_ms": 2.0, "rel": rel,
            }
        )  # fmt: skip
    return rows


def record(name: str = "fake") -> dict:
    fingerprint = runtime.device_fingerprint(SETTINGS.session)
    return device_record(name, SPACE, SETTINGS, fingerprint, "tiny")


def make_profile(folder, rows=None):
    log = prepare_profile_dir(folder, record())
    for row in rows or rows_for():
        log.append(row)
    return folder / MEASUREMENTS


def unseal(file, number: int, **changes) -> None:
    """Line ``number`` edited by hand: its checksum deleted, ``changes`` applied."""
    lines = file.read_text().splitlines()
    row = json.loads(lines[number - 1])
    del row[runtime.CHECKSUM_KEY]
    lines[number - 1] = json.dumps({**row, **changes})
    file.write_text("\n".join(lines) + "\n")


def make_bundle(folder, rows=None):
    """A profile bundle as runner.pyz leaves it on the device (no ONNX files needed)."""
    jobs = [r for r in rows_for() if r["kind"] == "model"]
    plan = {
        "schema": 1,
        "record": record("bundle"),
        "plan_id": "p1",
        "jobs": [{k: r[k] for k in ("arch_id", "arch", "batch", "seq_len")} for r in jobs],
    }
    (folder / "results").mkdir(parents=True)
    (folder / "plan.json").write_text(json.dumps(plan))
    device = {**runtime.device_fingerprint(SETTINGS.session), "plan": "p1"}
    (folder / "results" / "device.json").write_text(json.dumps(device))
    log = runtime.MeasurementLog(folder / "results" / MEASUREMENTS)
    for row in rows if rows is not None else rows_for():
        log.append(row)
    return folder / "results" / MEASUREMENTS


class Wider:
    """A synthetic evaluator: wider sub-BERTs score higher."""

    def evaluate(self, arch, split):
        return 0.5 + 0.01 * sum(arch.ffn) / 96


def search(log, space=SPACE, cost=None, **kwargs):
    """A small search logged to ``log``; ``kwargs``: Search's inputs and fresh."""
    cost = cost or CostModel(Target("t", {"params": 1e12}), space)
    settings = SearchSettings(algo="random", evaluations=6, seed=0, rescore_top=2)
    return Search(space, cost, Wider(), settings, log, **kwargs).run()


# ---- 1. a row without its checksum is an edited row --------------------------------------


def test_fit_refuses_rows_without_checksum_and_repair_sets_them_aside(tmp_path):
    file = make_profile(tmp_path / "p")
    for number in (3, 5):  # latencies multiplied by 5, checksums deleted
        row = json.loads(file.read_text().splitlines()[number - 1])
        unseal(file, number, median_ms=5 * row["median_ms"], rel=5 * row["rel"])
    before = file.read_bytes()
    refused = run("fit", "--profile", tmp_path / "p", "--out", tmp_path / "x.json")
    assert_one_line_error(refused, f"{file}: line 3 has no checksum")
    assert "--repair" in refused.output and file.read_bytes() == before
    repaired = run("fit", "--profile", tmp_path / "p", "--out", tmp_path / "x.json", "--repair")
    assert repaired.exit_code == 0, repaired.output
    assert "set 2 rows aside (line 3 has no checksum" in repaired.output
    assert json.loads((tmp_path / "x.json").read_text())["profile"]["rows"] == 18


def test_profile_resume_refuses_rows_without_checksum(tmp_path):
    file = make_profile(tmp_path / "p")
    unseal(file, 4)
    with pytest.raises(ProfileError, match=r"line 4 has no checksum.*--repair"):
        profile_device(SPACE, tmp_path / "p", "fake", SETTINGS, "tiny", backend=FakeBackend())
    dropped = open_log(tmp_path / "p", repair=True).set_aside  # what profile --repair does
    assert dropped == ["line 4 has no checksum (edited by hand, or not written by yoco-deploy)"]
    assert len(open_log(tmp_path / "p").rows) == 20


def test_profile_import_refuses_rows_without_checksum(tmp_path):
    results = make_bundle(tmp_path / "b")
    unseal(results, 2, median_ms=99.0)
    args = ("profile-import", tmp_path / "b", "--device", "pi", "--profiles-dir", tmp_path / "p")
    assert_one_line_error(run(*args), "line 2 has no checksum")
    assert not (tmp_path / "p" / "pi" / MEASUREMENTS).exists()


def test_a_search_log_row_without_checksum_is_not_replayed(tmp_path):
    log = tmp_path / "s.jsonl"
    search(log)
    unseal(log, 3, fitness=0.999)
    with pytest.raises(SearchError, match=r"s\.jsonl: line 3 has no checksum.*--repair"):
        search(log)
    note = runtime.repair_note(log, SearchLog.set_aside(log))
    assert "set 1 row aside (line 3 has no checksum" in note
    assert search(log).best.fitness < 0.999


# ---- 2. a search log replays only what it was made with ----------------------------------


def _search_cli(model_dir, data_dir, out, *extra):
    return run(
        "search", "--supernet", model_dir, "--task", "sst2", "--data-dir", data_dir,
        "--target", "tiny:params=3M", "--evaluations", "3", "--no-ship", "--seq-len", "16",
        "--out", out, *extra,
    )  # fmt: skip


def test_a_log_of_another_super_bert_is_refused_and_fresh_starts_anew(tmp_path):
    import torch
    from transformers import BertForSequenceClassification

    model_dir, data_dir = write_tiny_task(tmp_path, n_train=40, n_dev=10)
    out = tmp_path / "s"
    first = _search_cli(model_dir, data_dir, out)
    assert first.exit_code == 0, first.output
    (log,) = out.glob("*/search-esng-seed0.jsonl")
    model = BertForSequenceClassification.from_pretrained(model_dir)
    with torch.no_grad():
        model.classifier.weight.zero_()  # another super-BERT: the same shapes, other scores
    model.save_pretrained(model_dir)
    before = log.read_bytes()
    refused = _search_cli(model_dir, data_dir, out)
    assert refused.exit_code == 1 and "Traceback" not in refused.output, refused.output
    (line,) = [x for x in refused.output.splitlines() if "another super-BERT" in x]
    assert f"{log} was made with another super-BERT (weights " in line and "--fresh" in line
    assert log.read_bytes() == before
    fresh = _search_cli(model_dir, data_dir, out, "--fresh")
    assert fresh.exit_code == 0, fresh.output
    (kept,) = log.parent.glob(log.name + ".replaced-*")
    assert kept.read_bytes() == before and "previous log is kept as" in fresh.output
    old, new = (json.loads(f.read_text().splitlines()[0]) for f in (kept, log))
    assert old["kind"] == new["kind"] == "inputs" and old["super_bert"] != new["super_bert"]


def test_a_log_that_records_no_inputs_is_refused(tmp_path):
    log = tmp_path / "s.jsonl"
    search(log)
    lines = log.read_text().splitlines()
    assert json.loads(lines[0])["kind"] == "inputs"
    log.write_text("\n".join(lines[1:]) + "\n")  # as logs were written before
    with pytest.raises(
        SearchError, match=r"records no inputs .* cannot be tied to this super-BERT"
    ):
        search(log)
    assert search(log, fresh=True).evaluations == 6


def test_a_log_of_another_super_bert_or_space_is_refused_a_new_predictor_reuses_it(
    tmp_path, monkeypatch
):
    log = tmp_path / "s.jsonl"
    search(log, inputs={"super_bert": "a" * 64})
    with pytest.raises(SearchError, match=r"made with another super-BERT \(weights aaaaaaaaaaaa"):
        search(log, inputs={"super_bert": "b" * 64})
    other = SPACE.with_overrides({"ffn": [48, 96]})
    with pytest.raises(
        SearchError, match=r"another search space \(ffn \[24, 48, 72, 96\], now \[48, 96\]"
    ):
        search(log, space=other, inputs={"super_bert": "a" * 64})

    class Predictor:  # what the cost model exposes of a fitted predictor
        space = SPACE.shape_dict()

        def to_dict(self):
            return {"sha256": "c" * 64}

        def predict(self, arch, batch, seq_len, reference_ms=None):
            return SimpleNamespace(latency_ms=1.0)

    cost = CostModel(Target("t", {"params": 1e12}), SPACE)
    monkeypatch.setattr(cost, "predictor", Predictor())
    # scores are metrics, which no predictor changes: a refit reuses every one
    before = log.read_bytes()
    search(log, cost=cost, inputs={"super_bert": "a" * 64})
    assert log.read_bytes() == before  # every score replayed, none evaluated again


# ---- 3. profile-import: locked, in the plan, each row once, --repair ------------------------


def test_profile_import_takes_the_profile_folders_lock(tmp_path):
    make_bundle(tmp_path / "b")
    child = hold_in_another_process(tmp_path / "p" / "pi.lock")
    try:
        with pytest.raises(LockHeld, match=r"profile folder .*pi is in use"):
            import_bundle(tmp_path / "b", tmp_path / "p" / "pi", "pi")
    finally:
        child.kill()
        child.wait()
    assert not (tmp_path / "p" / "pi" / MEASUREMENTS).exists()


def test_profile_import_skips_repeated_rows_and_says_so(tmp_path):
    rows = rows_for()
    make_bundle(tmp_path / "b", [*rows, rows[3], rows[4]])
    said = []
    added = import_bundle(tmp_path / "b", tmp_path / "p" / "pi", "pi", say=said.append)
    assert added == len(rows) and len(open_log(tmp_path / "p" / "pi").rows) == len(rows)
    assert any("skipped 2 rows that repeat a row above" in line for line in said)
    assert import_bundle(tmp_path / "b", tmp_path / "p" / "pi", "pi") == 0


def test_profile_import_refuses_rows_outside_the_plan_and_repair_sets_them_aside(tmp_path):
    foreign = SpaceFillingDesign(SPACE, 7).sample(40)[-1]  # not among the plan's 20
    rows = rows_for()
    alien = {**rows[1], "arch_id": foreign.arch_id, "arch": foreign.to_dict()}
    alien["key"] = runtime.job_key(foreign.arch_id, 1, 16)
    make_bundle(tmp_path / "b", [*rows, alien])
    args = ("profile-import", tmp_path / "b", "--device", "pi", "--profiles-dir", tmp_path / "p")
    assert_one_line_error(run(*args), f"line 22 measures {alien['key']}, which")
    repaired = run(*args, "--repair")
    assert repaired.exit_code == 0, repaired.output
    assert "set 1 row aside (line 22 measures" in repaired.output
    assert f"imported {len(rows)} new rows" in repaired.output


def test_profile_import_of_rows_without_key_is_one_line(tmp_path):
    rows = rows_for()
    make_bundle(tmp_path / "b", [rows[0], {k: v for k, v in rows[1].items() if k != "key"}])
    args = ("profile-import", tmp_path / "b", "--device", "pi", "--profiles-dir", tmp_path / "p")
    assert_one_line_error(run(*args), "line 2 has no key")


# ---- 4. an append writes a whole row or nothing ----------------------------------------------


def test_a_short_write_is_completed(tmp_path, monkeypatch):
    log = runtime.MeasurementLog(tmp_path / "m.jsonl")
    write = sealed.os.write
    monkeypatch.setattr(sealed.os, "write", lambda fd, data: write(fd, data[:7]))
    log.append(rows_for(1)[1])
    monkeypatch.undo()
    assert runtime.MeasurementLog(tmp_path / "m.jsonl").rows == log.rows


@pytest.mark.parametrize("which", ["measurements", "search"])
def test_a_failed_append_leaves_the_file_as_it_was(which, tmp_path, monkeypatch):
    file = tmp_path / "m.jsonl"
    if which == "measurements":
        log = runtime.MeasurementLog(file)
        log.append(rows_for(1)[0])
        error, append = runtime.RunnerError, lambda: log.append(rows_for(1)[1])
    else:
        search(file)
        error, append = SearchError, lambda: SearchLog(file).append({"kind": "eval"})
    before = file.read_bytes()
    write, calls = sealed.os.write, []

    def disk_fills(fd, data):  # half a row fits, then the disk is full
        calls.append(fd)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return write(fd, data[: len(data) // 2])

    monkeypatch.setattr(sealed.os, "write", disk_fills)
    with pytest.raises(error, match=r"No space left on device; the file is as it was"):
        append()
    monkeypatch.undo()
    assert file.read_bytes() == before


# ---- 5. unusable rows and device files in fit: one line --------------------------------------


@pytest.mark.parametrize(
    "change, fragment",
    [
        ({"rel": math.nan}, "line 4 has rel nan, not a finite number"),
        ({"median_ms": math.inf}, "line 4 has median_ms inf, not a finite number"),
        ({"ref_ms": "2.0"}, "line 4 has ref_ms '2.0', not a number"),
        ({"arch": None}, "line 4 has no valid arch (None)"),
    ],
)
def test_fit_refuses_unusable_rows_in_one_line(change, fragment, tmp_path):
    rows = rows_for()
    rows[3] = {**rows[3], **change}  # written with a valid checksum: not an edit, a bad row
    make_profile(tmp_path / "p", rows)
    result = run("fit", "--profile", tmp_path / "p", "--out", tmp_path / "x.json")
    assert_one_line_error(result, fragment)


@pytest.mark.parametrize(
    "device, fragment",
    [
        ({"schema": 1, "space": "garbage"}, "is damaged (name is None, not a str)"),
        ({**record(), "space": {"dims": 3}}, "is damaged (space is not a search space"),
    ],
)
def test_fit_refuses_a_garbage_device_file_in_one_line(device, fragment, tmp_path):
    make_profile(tmp_path / "p")
    (tmp_path / "p" / "device.json").write_text(json.dumps(device))
    result = run("fit", "--profile", tmp_path / "p", "--out", tmp_path / "x.json")
    assert_one_line_error(result, fragment)
