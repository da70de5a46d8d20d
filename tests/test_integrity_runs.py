"""Nothing edited, stale or foreign is trusted: refusals, folder
names, and a run that ships every target it can. Grouped by surface: fit, names, ship
summary, pipeline run, predict, signals, profile's temporary files."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from transformers import BertConfig

from yoco_deploy import runtime
from yoco_deploy.deploy.budgets import BudgetError, CostModel, parse_target
from yoco_deploy.deploy.per_target import DeployJob
from yoco_deploy.device.profile_store import MEASUREMENTS
from yoco_deploy.device.profiling import ProfileSettings, profile_device
from yoco_deploy.pipeline.config import PipelineError, load_pipeline
from yoco_deploy.space import SearchSpace

from helpers import TINY, FakeBackend, assert_one_line_error, run, write_tiny_task

FAST = runtime.Protocol(warmup=1, min_runs=3, max_runs=6, chunk=3, ref_every=5)
SPACE = SearchSpace.from_config(BertConfig(**TINY))
ARCH = '{"layers": [{"heads": 2, "ffn": 24}, {"heads": 6, "ffn": 96}]}'


@pytest.fixture(scope="module")
def profile_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("profiles") / "fake"
    settings = ProfileSettings(n=12, protocol=FAST, session=runtime.SessionSpec(threads=1))
    profile_device(
        SPACE, out, "fake", settings, "tiny", progress=lambda *a: None, backend=FakeBackend()
    )
    return out


def _copy_profile(profile_dir: Path, to: Path, change) -> Path:
    """The profile with ``change(row)`` applied to its rows, each sealed again (what a
    device with a broken clock, or a broken runner, would have written)."""
    to.mkdir()
    (to / "device.json").write_bytes((profile_dir / "device.json").read_bytes())
    lines = (profile_dir / MEASUREMENTS).read_bytes().splitlines()
    rows = [runtime.parse_row(line)[0] for line in lines if line.strip()]
    (to / MEASUREMENTS).write_bytes(b"".join(runtime.sealed_line(change(r)) for r in rows))
    return to


# ---- fit ----------------------------------------------------------------------------------


def _first_model_row(value: float):
    seen = []

    def change(row):
        if row["kind"] == "model" and not seen:
            seen.append(row["key"])
            return {**row, "median_ms": value}
        return row

    return change, seen


def _all_zero(row):
    zeroed = {k: 0.0 for k in ("median_ms", "p90_ms", "ref_ms", "rel") if k in row}
    return {**row, **zeroed}


@pytest.mark.parametrize("value", [-3.5, 1e300])
def test_fit_refuses_a_latency_no_timing_gives(profile_dir, tmp_path, value):
    change, seen = _first_model_row(value)
    bad = _copy_profile(profile_dir, tmp_path / "bad", change)
    out = tmp_path / "pred.json"
    result = run("fit", "--profile", bad, "--out", out)
    assert_one_line_error(result, f"{bad / MEASUREMENTS}: row {seen[0]} has median_ms")
    assert not out.exists()


def test_fit_refuses_an_all_zero_profile(profile_dir, tmp_path):
    bad = _copy_profile(profile_dir, tmp_path / "zero", _all_zero)
    result = run("fit", "--profile", bad, "--out", tmp_path / "pred.json")
    assert_one_line_error(result, str(bad / MEASUREMENTS))
    assert "not above zero" in result.output


@pytest.mark.parametrize("name", [MEASUREMENTS, "device.json", "."])
def test_fit_never_writes_over_its_own_profile(profile_dir, tmp_path, name):
    profile = _copy_profile(profile_dir, tmp_path / "p", lambda row: row)
    before = {f.name: f.read_bytes() for f in profile.iterdir()}
    result = run("fit", "--profile", profile, "--out", profile / name)
    assert_one_line_error(result, "would write over")
    assert {f.name: f.read_bytes() for f in profile.iterdir()} == before


@pytest.mark.parametrize("command", ["export", "profile-bundle"])
def test_export_and_profile_bundle_never_write_over_their_model(tiny_dir, command):
    before = {f.name: f.read_bytes() for f in tiny_dir.iterdir()}
    args = ["--arch", ARCH] if command == "export" else ["--n", 2]
    result = run(command, "--model", tiny_dir, *args, "--out", tiny_dir)
    assert_one_line_error(result, f"--out {tiny_dir} would write over {tiny_dir}")
    assert {f.name: f.read_bytes() for f in tiny_dir.iterdir()} == before


# ---- names --------------------------------------------------------------------------------


def test_long_target_names_keep_folders_of_their_own():
    device = "d" * 95  # the labels agree on their first 100 characters
    a, b = parse_target(f"{device}:params=1M"), parse_target(f"{device}:params=2M")
    assert a.slug() != b.slug() and len(a.slug()) <= 100 and len(b.slug()) <= 100
    assert a.cut_slug() == b.cut_slug()  # where both once went


def _cut_log(logs: Path, target) -> Path:
    log = logs / target.cut_slug() / "search-esng-seed0.jsonl"
    log.parent.mkdir(parents=True)
    log.write_text("")
    return log


def test_a_log_under_the_old_cut_name_resumes_unless_two_targets_had_that_name(tmp_path):
    from yoco_deploy.deploy.search_types import SearchError

    device = "d" * 95
    one, two = parse_target(f"{device}:params=1M"), parse_target(f"{device}:params=2M")
    old = _cut_log(tmp_path, one)
    alone = DeployJob((one,), logs=tmp_path)
    assert alone.log_path(CostModel(one, SPACE)) == old
    both = DeployJob((one, two), logs=tmp_path)
    with pytest.raises(SearchError, match="move it into the folder of the target"):
        both.log_path(CostModel(one, SPACE))
    # a short name was never cut: its own folder, as before
    short = parse_target("dev:params=1M")
    assert DeployJob((short,), logs=tmp_path).log_path(CostModel(short, SPACE)).parent.name == (
        short.slug()
    )


def test_search_refuses_the_same_target_twice():
    a, b = parse_target("d:params=1M,flops=1G"), parse_target("d:flops=1G,params=1M")
    with pytest.raises(BudgetError, match="is the same as"):
        DeployJob((a, b))
    clash = parse_target("a_params-1M:flops=1G"), parse_target("a:params=1M,flops=1G")
    with pytest.raises(BudgetError, match="would share the folder a_params-1M_flops-1G"):
        DeployJob(clash)


HEAD = "model: m\ntask: sst2\nworkdir: w\n"


@pytest.mark.parametrize(
    "body, message",
    [
        ("targets: ['d:params=1M', 'd:params=1.0M']\n", "is the same as 'd:params=1M'"),
        (
            "devices: [{name: d}, {name: d, threads: 1}]\ntargets: ['d:latency=5ms']\n",
            "device 'd' is listed twice, with different settings",
        ),
        ("devices: [{name: d}, {name: d}]\ntargets: ['d:latency=5ms']\n", "is listed twice"),
    ],
)
def test_run_refuses_a_target_or_device_given_twice_at_load(tmp_path, body, message):
    path = tmp_path / "p.yaml"
    path.write_text(HEAD + body)
    with pytest.raises(PipelineError, match=message):
        load_pipeline(path)
    result = run("run", path, "--dry-run")
    assert result.exit_code == 1 and message in result.output
    assert len(result.output.strip().splitlines()) == 1


# ---- ship summary -------------------------------------------------------------------------


def test_a_second_ship_keeps_every_bundle_in_the_summary_and_the_plot(tmp_path, monkeypatch):
    import yoco_deploy.plots

    plotted = []
    drawn = yoco_deploy.plots.pareto_plot

    def spy(manifests, path):
        plotted.append(len(manifests))
        return drawn(manifests, path)

    monkeypatch.setattr(yoco_deploy.plots, "pareto_plot", spy)
    model_dir, data_dir = write_tiny_task(tmp_path, n_train=40, n_dev=20)
    bundles = tmp_path / "b"
    (bundles / ".polish" / "x").mkdir(parents=True)  # polish runs: not bundles
    (bundles / ".polish" / "x" / "manifest.json").write_text("{}")
    (bundles / "notes").mkdir()  # a folder without a manifest
    common = ["--supernet", model_dir, "--task", "sst2", "--data-dir", data_dir,
              "--seq-len", 16, "--min-metric", 0, "--bundles", bundles,
              "--target", "tiny:params=3M"]  # fmt: skip
    other = '{"layers": [{"heads": 2, "ffn": 24}, {"heads": 2, "ffn": 24}]}'
    for arch in (ARCH, other):
        result = run("ship", *common, "--arch", arch)
        assert result.exit_code == 0, result.output
    rows = json.loads((bundles / "summary.json").read_text())
    shipped = sorted(p.parent for p in bundles.glob("*/manifest.json"))
    assert len(shipped) == 2 and sorted(Path(r["bundle"]) for r in rows) == shipped
    assert plotted == [1, 2] and (bundles / "pareto.png").is_file()


# ---- pipeline run -------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["/", "home", "."])
def test_run_refuses_a_workdir_that_is_not_its_own(tmp_path, where, monkeypatch):
    monkeypatch.chdir(tmp_path)
    workdir = str(Path.home()) if where == "home" else where
    path = tmp_path / "p.yaml"
    path.write_text(f"model: m\ntask: sst2\nworkdir: {workdir}\ntargets: ['d:params=1M']\n")
    result = run("run", path, "--dry-run")
    assert_one_line_error(result, f"workdir {workdir}")
    assert "give it a folder of its own" in result.output


@pytest.fixture
def two_targets(tmp_path):
    model_dir, data_dir = write_tiny_task(tmp_path, n_train=20, n_dev=10)
    data = yaml.safe_load(Path("configs/pipeline-tiny.yaml").read_text())
    data.update(model=str(model_dir), data_dir=str(data_dir), workdir=str(tmp_path / "w"))
    data["targets"] = ["tiny-dev:latency=60%", "tiny-dev:latency=90%"]
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_one_refused_target_does_not_stop_the_others_and_a_rerun_retries_it(
    two_targets, monkeypatch
):
    """A small sub-BERT stuck at the majority class: the gate refuses the first target;
    the second is still searched and shipped, and the run ends naming the first."""
    from yoco_deploy.deploy.quality import QualityError
    from yoco_deploy.pipeline.run import PipelineRun

    gate_open, ran = [False], []

    def search_ship(self, target, predictor, out):
        ran.append(target.label())
        if target.budgets["latency_share"] < 0.8 and not gate_open[0]:
            raise QualityError(f"target {target.label()}: no candidate is clearly better")
        out.mkdir(parents=True, exist_ok=True)
        (out / "shipped").write_text(target.label())

    monkeypatch.setattr(PipelineRun, "stages", lambda self: self._targets())
    monkeypatch.setattr(PipelineRun, "_search_ship", search_ship)
    first = run("run", two_targets)
    assert first.exit_code == 1, first.output
    assert ran == ["tiny-dev:latency_share=60%", "tiny-dev:latency_share=90%"]
    last = first.output.strip().splitlines()[-1]
    assert last.startswith("error: 1 of 2 targets refused") and "'tiny-dev:latency=60%'" in last
    assert "refused tiny-dev:latency=60%: target" in first.output  # the reason, as it came
    ran.clear()
    gate_open[0] = True
    again = run("run", two_targets)
    assert again.exit_code == 0, again.output
    assert ran == ["tiny-dev:latency_share=60%"]  # the shipped one is up to date


def test_search_ships_every_target_it_can_and_names_the_refused(tmp_path, monkeypatch):
    from yoco_deploy.deploy.search_types import SearchError

    model_dir, data_dir = write_tiny_task(tmp_path, n_train=40, n_dev=20)
    searched = DeployJob.run_search

    def run_search(self, net, cm, *args, **kwargs):
        if cm.target.budgets["params"] < 2e6:
            raise SearchError(f"target {cm.target.label()}: refused for the test")
        return searched(self, net, cm, *args, **kwargs)

    monkeypatch.setattr(DeployJob, "run_search", run_search)
    result = run(
        "search", "--supernet", model_dir, "--task", "sst2", "--data-dir", data_dir,
        "--target", "tiny:params=1.5M", "--target", "tiny:params=3M", "--evaluations", 4,
        "--no-ship", "--seq-len", 16, "--out", tmp_path / "s", "--json",
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    (best,) = json.loads(result.stdout)
    assert best["target"] == "tiny:params=3M"
    last = result.output.strip().splitlines()[-1]
    assert "1 of 2 targets refused" in last and "-t 'tiny:params=1.5M'" in last


# ---- predict ------------------------------------------------------------------------------


def _predictor(tmp_path, shapes):
    from yoco_deploy.device.predictor import LatencyPredictor

    from helpers import BASE, make_predictor

    p, _ = make_predictor(BASE, tmp_path)
    profile = {**p.profile, "shapes": shapes}
    medians = {s: 10.0 for s in shapes}
    p = LatencyPredictor(**{**p.__dict__, "profile": profile,
                            "reference": {**p.reference, "median_ms": medians}})  # fmt: skip
    arch = json.dumps(BASE.sampler(5).sample().to_dict())
    return p.save(tmp_path / "shapes.json"), arch


def test_predict_refuses_shapes_outside_the_profiled_range_and_flags_those_between(tmp_path):
    path, arch = _predictor(tmp_path, ["1x64", "4x128"])
    for extra in (["--batch", 8], ["--seq-len", 32], ["--seq-len", 256]):
        result = run("predict", "--predictor", path, "--arch", arch, *extra)
        assert_one_line_error(result, "(batch 1 to 4, seq_len 64 to 128)")
    between = run("predict", "--predictor", path, "--arch", arch, "--batch", 2, "--seq-len", 96)
    assert between.exit_code == 0, between.output
    assert json.loads(between.output)["extrapolated"] is True


# ---- signals ------------------------------------------------------------------------------

LATE = """
import atexit, sys, time
from pathlib import Path
from yoco_deploy.cli import main
ready = Path(sys.argv.pop(1))
class Slow:  # destroyed as the interpreter tears down its modules
    def __del__(self):
        ready.write_text("teardown"); time.sleep(30)
def slow_exit_hook():
    ready.write_text("exit hook"); time.sleep(30)
if sys.argv.pop(1) == "teardown":
    keep = Slow()
sys.argv[1:] = ["space", "--help"]
code = main()
if "keep" not in globals():
    atexit.register(slow_exit_hook)  # after main: runs before main's own last hook
sys.exit(code)
"""


@pytest.mark.parametrize("phase", ["exit-hook", "teardown"])
def test_sigterm_while_the_program_shuts_down_exits_143(tmp_path, phase):
    """A SIGTERM after the command finished, while Python runs its exit hooks or tears
    down its modules, once gave exit 0 (Terminated raised in an exit hook, ignored) or
    -15 (the default handler, restored by the teardown)."""
    ready = tmp_path / "ready"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-c", LATE, str(ready), phase]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not ready.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    if ready.exists():
        proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=60)
    if phase == "teardown":  # the program leaves before the teardown, where -15 came from
        assert not ready.exists() and code == 0, proc.stderr.read()[-2000:]
    else:
        assert code == 143, proc.stderr.read()[-2000:]


def test_python_dash_m_exits_with_the_commands_code(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "yoco_deploy.cli", "predict", "--predictor",
           str(tmp_path / "none.json"), "--arch", ARCH]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "error: cannot read predictor" in done.stderr


# ---- profile's temporary files ------------------------------------------------------------


def test_a_killed_profiles_exports_are_cleaned_by_the_next_run(tmp_path, monkeypatch):
    """Exports live inside the profile (``.exports``): what a killed profile left there
    is removed when the profile runs again, and nothing goes to the system temp folder."""
    import yoco_deploy.device.artifacts as artifacts

    out = tmp_path / "profiles" / "dev"
    stale = out / artifacts.EXPORTS / "0123abcd" / "model.int8.onnx"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"x" * 1000)  # what a SIGKILL left behind
    built = []
    build = artifacts.ArtifactBuilder.build

    def spy(self, arch):
        path = build(self, arch)
        built.append(path)
        assert not stale.exists()  # cleaned before the first export
        return path

    monkeypatch.setattr(artifacts.ArtifactBuilder, "build", spy)
    settings = ProfileSettings(n=3, protocol=FAST, session=runtime.SessionSpec(threads=1))
    profile_device(SPACE, out, "dev", settings, "tiny", progress=lambda *a: None,
                   backend=FakeBackend())  # fmt: skip
    assert built and all(out / artifacts.EXPORTS in p.parents for p in built)
    assert not (out / artifacts.EXPORTS).exists()  # removed when the profile ends
