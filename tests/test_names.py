"""Names that become paths never leave the folder the user named."""

import pytest

from yoco_deploy.budgets import Target, parse_target
from yoco_deploy.names import UnsafeNameError, check_name, slug

UNSAFE = ["../victim", "a/b", "..", ".hidden", "", "x" * 101, "a b", "c:\\\\d", "ok/../../x"]


@pytest.mark.parametrize("name", UNSAFE)
def test_unsafe_names_are_refused(name):
    with pytest.raises(UnsafeNameError, match="is not a plain name"):
        check_name(name, "device name")


@pytest.mark.parametrize("text", ["../../victim:params=1M", "a/b:latency=2ms", "..:flops=1G"])
def test_a_target_naming_a_path_is_refused_at_parse_time(text):
    with pytest.raises(UnsafeNameError):
        parse_target(text)
    with pytest.raises(UnsafeNameError):
        Target(text.split(":")[0], {"params": 1e6})


def test_one_folder_name_per_target():
    target = parse_target("this-machine:latency=55%,params=20M")
    assert target.slug() == slug(target.label()) == "this-machine_latency_share-55pct_params-20M"
    assert "/" not in target.slug() and ".." not in target.slug()
    assert check_name("x86-2c-ort-cpu-minilm") == "x86-2c-ort-cpu-minilm"


def test_cli_refuses_a_device_path(tmp_path):
    from test_cli import run

    result = run(
        "profile", "--model", "minilm", "--device", "../../x",
        "--profiles-dir", tmp_path / "profiles", "--n", 10,
    )  # fmt: skip
    assert result.exit_code != 0
    assert "is not a plain name" in result.output
    assert not (tmp_path / "x").exists() and not (tmp_path.parent / "x").exists()
