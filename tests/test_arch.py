import json

import pytest

from yoco_deploy.arch import Arch, LayerSpec
from yoco_deploy.errors import ArchError


def test_json_round_trip_is_exact():
    arch = Arch((LayerSpec(12, 3072), LayerSpec(4, 512), LayerSpec(8, 768)))
    assert Arch.from_json(arch.to_json()) == arch
    assert json.loads(arch.to_json()) == {
        "layers": [{"heads": 12, "ffn": 3072}, {"heads": 4, "ffn": 512}, {"heads": 8, "ffn": 768}]
    }
    assert arch.depth == 3 and arch.heads == (12, 4, 8) and arch.ffn == (3072, 512, 768)


def test_arch_id_is_stable_and_content_based(tmp_path):
    arch = Arch.uniform(6, 12, 3072)
    # golden value: ids must not change between versions or machines
    assert arch.arch_id == Arch.uniform(6, 12, 3072).arch_id == "375a61cab2"
    assert Arch.uniform(6, 12, 1536).arch_id != arch.arch_id
    path = tmp_path / "a.json"
    arch.save(path)
    assert Arch.load(path).arch_id == arch.arch_id


def test_arch_is_immutable():
    arch = Arch.uniform(2, 4, 8)
    with pytest.raises(AttributeError):
        arch.layers = ()  # type: ignore[misc]


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("not json", "not valid JSON"),
        ('{"layers": []}', "at least one layer"),
        ('{"layers": [{"heads": 0, "ffn": 8}]}', "positive integer"),
        ('{"layers": [{"heads": 2}]}', 'layer 0 must be {"heads": H, "ffn": F}'),
        ('{"depth": 3}', "an architecture is a JSON object"),
        ('{"layers": [{"heads": 2.5, "ffn": 8}]}', "positive integer"),
    ],
)
def test_bad_json_is_a_clear_error(text, fragment):
    with pytest.raises(ArchError, match=fragment.replace("{", r"\{").replace("}", r"\}")):
        Arch.from_json(text)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ArchError, match="cannot read architecture file"):
        Arch.load(tmp_path / "nope.json")
