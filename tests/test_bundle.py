import json
import shutil
import subprocess
import sys

import pytest
from transformers import BertConfig

from yoco_deploy import runtime
from yoco_deploy.device.profile_store import ProfileError, load_training_data, read_device
from yoco_deploy.device.profiling import ProfileSettings
from yoco_deploy.device.remote_profile import import_bundle, write_bundle
from yoco_deploy.space import SearchSpace

from helpers import TINY

FAST = runtime.Protocol(warmup=1, min_runs=3, max_runs=6, chunk=3, ref_every=4)


@pytest.fixture
def bundle(tmp_path):
    space = SearchSpace.from_config(BertConfig(**TINY))
    out = tmp_path / "bundle"
    write_bundle(
        space,
        out,
        ProfileSettings(n=4, session=runtime.SessionSpec(threads=1), protocol=FAST),
        "tiny",
    )
    return out


def test_bundle_layout(bundle):
    plan = json.loads((bundle / "plan.json").read_text())
    assert len(plan["jobs"]) == 4 and (bundle / "runner.pyz").is_file()
    assert all((bundle / j["file"]).is_file() for j in plan["jobs"])
    assert (bundle / plan["reference"]["file"]).is_file()


def test_runner_then_import(bundle, tmp_path):
    assert runtime.main([str(bundle), "--threads", "1"]) == 0
    assert runtime.main([str(bundle), "--threads", "1"]) == 0  # rerun: nothing left to do
    profile = tmp_path / "profiles" / "pi"
    added = import_bundle(bundle, profile, "pi")
    rows = [json.loads(line) for line in (bundle / "results/measurements.jsonl").open()]
    assert added == len(rows) and len({r["key"] for r in rows if r["kind"] == "model"}) == 4
    assert import_bundle(bundle, profile, "pi") == 0  # re-import adds nothing
    assert read_device(profile)["name"] == "pi"
    data, _ = load_training_data(profile)
    assert len(data.rel) == 4


def test_import_without_results_is_a_clear_error(bundle, tmp_path):
    with pytest.raises(ProfileError, match=r"run `python runner\.py"):
        import_bundle(bundle, tmp_path / "p", "pi")


def test_runner_reports_bad_bundle(tmp_path, capsys):
    assert runtime.main([str(tmp_path)]) == 1
    assert "plan.json not found" in capsys.readouterr().err


@pytest.mark.slow
def test_runner_works_with_only_onnxruntime_and_numpy(bundle, tmp_path):
    import numpy
    import onnxruntime

    venv = tmp_path / "fresh"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    pins = [f"onnxruntime=={onnxruntime.__version__}", f"numpy=={numpy.__version__}"]
    subprocess.run([str(py), "-m", "pip", "install", "-q", *pins], check=True)
    probe = (
        "import importlib.util as u; "
        "print([m for m in ('torch', 'transformers', 'yoco_deploy') if u.find_spec(m)])"
    )
    assert (
        subprocess.run(
            [str(py), "-c", probe], capture_output=True, text=True, check=True, cwd=tmp_path
        ).stdout.strip()
        == "[]"
    )
    done = subprocess.run(
        [str(py), str(bundle / "runner.pyz"), str(bundle), "--threads", "1"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = (bundle / "results" / "measurements.jsonl").read_text().splitlines()
    assert len({json.loads(r)["key"] for r in rows if json.loads(r)["kind"] == "model"}) == 4


def test_profile_bundle_and_import_print_json(tiny_dir, tmp_path):
    from helpers import run

    out = tmp_path / "remote"
    written = run(
        "profile-bundle", "-m", tiny_dir, "--out", out, "--n", "3", "--threads", "1", "--json"
    )
    assert written.exit_code == 0, written.output
    printed = json.loads(written.stdout)
    assert printed == {
        "bundle": str(out),
        "jobs": 3,
        "run_on_device": f"python runner.pyz {out} --provider cpu --threads 1",
    }
    plan = json.loads((out / "plan.json").read_text())
    plan["protocol"] = FAST.to_dict()  # a fast device run; the plan is the device's input
    (out / "plan.json").write_text(json.dumps(plan))
    assert runtime.main([str(out), "--threads", "1"]) == 0
    profiles = tmp_path / "profiles"
    imported = run("profile-import", out, "--device", "pi", "--profiles-dir", profiles, "--json")
    assert imported.exit_code == 0, imported.output
    rows = (out / "results" / "measurements.jsonl").read_text().splitlines()
    assert json.loads(imported.stdout) == {"profile": str(profiles / "pi"), "added_rows": len(rows)}


API_ONLY = """
import importlib.util as u, json, sys
assert [m for m in ("torch", "transformers") if u.find_spec(m)] == []
from dataclasses import asdict
from yoco_deploy import load_bundle
bundle = load_bundle(sys.argv[1])
print(json.dumps([asdict(p) for p in bundle.classify(sys.argv[2:], batch_size=1)]))
"""


@pytest.mark.slow
def test_the_api_works_with_only_onnxruntime_tokenizers_and_numpy(tmp_path):
    """What the README tells a server to install: onnxruntime, tokenizers, numpy and this
    package without its dependencies; load_bundle then classifies as in this process."""
    from pathlib import Path

    import numpy
    import onnxruntime
    import tokenizers

    from yoco_deploy import load_bundle
    from yoco_deploy.train.data import load_task

    from helpers import ship_tiny_bundle, write_tiny_task

    model_dir, data_dir = write_tiny_task(tmp_path, n_train=10, n_dev=8)
    shipped = ship_tiny_bundle(model_dir, load_task("sst2", data_dir), tmp_path / "bundles")
    venv = tmp_path / "api-only"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    pins = [f"onnxruntime=={onnxruntime.__version__}", f"numpy=={numpy.__version__}",
            f"tokenizers=={tokenizers.__version__}"]  # fmt: skip
    root, source = Path(__file__).resolve().parents[1], tmp_path / "source"
    # built from a copy: an in-tree build would leave build/ in the checkout
    shutil.copytree(root / "yoco_deploy", source / "yoco_deploy",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, source / name)
    subprocess.run([py, "-m", "pip", "install", "-q", *pins], check=True)
    subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", str(source)], check=True)
    texts = ["a gripping, funny film", "a dull mess"]
    done = subprocess.run(
        [py, "-c", API_ONLY, str(shipped.path), *texts],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    printed = json.loads(done.stdout)
    here = load_bundle(shipped.path).classify(texts, batch_size=1)
    assert [p["name"] for p in printed] == [p.name for p in here]
    assert {p["name"] for p in printed} <= {"negative", "positive"}
    assert printed[0]["logits"] == pytest.approx(list(here[0].logits), abs=1e-5)
