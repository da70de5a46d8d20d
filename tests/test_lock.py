"""One writer per profile folder, search log and pipeline workdir; the second refuses
with the holder's details."""

import json

import pytest

from yoco_deploy.util.lock import LockHeld, exclusive

from helpers import hold_in_another_process


def test_a_second_writer_is_refused_with_the_holders_details(tmp_path):
    lock = tmp_path / "profiles" / "dev.lock"
    child = hold_in_another_process(lock)
    try:
        with pytest.raises(LockHeld) as err, exclusive(lock, "profile folder dev"):
            pass
        message = str(err.value)
        assert f"pid {child.pid}" in message and "since" in message
        assert "profile folder dev is in use" in message
    finally:
        child.kill()
        child.wait()
    # killed (kill -9): the OS released the lock, nothing stale to clean up
    with exclusive(lock, "profile folder dev"):
        assert json.loads(lock.read_text())["pid"] != child.pid


def test_search_log_and_profile_folder_are_locked(tmp_path):
    from transformers import BertConfig

    from yoco_deploy.deploy.budgets import CostModel, Target
    from yoco_deploy.deploy.search import Search, SearchSettings
    from yoco_deploy.device.profiling import ProfileSettings, profile_device
    from yoco_deploy.space import SearchSpace

    from helpers import TINY

    space = SearchSpace.from_config(BertConfig(**TINY))
    log = tmp_path / "search" / "s.jsonl"
    child = hold_in_another_process(log.with_name("s.jsonl.lock"))
    try:
        cost = CostModel(Target("t", {"params": 1e12}), space)
        with pytest.raises(LockHeld, match=r"search log .* is in use: pid"):
            Search(space, cost, lambda a, s: 0.5, SearchSettings(), log).run()
        assert not log.exists()
    finally:
        child.kill()
        child.wait()
    out = tmp_path / "profiles" / "dev"
    child = hold_in_another_process(tmp_path / "profiles" / "dev.lock")
    try:
        with pytest.raises(LockHeld, match=r"profile folder .* is in use"):
            profile_device(space, out, "dev", ProfileSettings(n=10), "tiny")
        assert not out.exists()
    finally:
        child.kill()
        child.wait()
