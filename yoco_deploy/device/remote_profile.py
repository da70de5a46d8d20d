"""Profiling a device that has no torch (a Raspberry Pi, a Jetson): a bundle of ONNX
files, a plan and the runner (``runner.pyz``: the package's ONNX Runtime leaf,
:mod:`yoco_deploy.runtime`) goes out; its measurements come back into a profile
directory."""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from yoco_deploy import runtime
from yoco_deploy.device.artifacts import ArtifactBuilder, export_work
from yoco_deploy.device.profile_store import (
    DEVICE,
    DEVICE_SCHEMA,
    MEASUREMENTS,
    ProfileError,
    device_record,
    open_log,
    plan_jobs,
    prepare_profile_dir,
    reference_arch,
    row_problem,
)
from yoco_deploy.device.profiling import ProfileSettings, Progress
from yoco_deploy.device.sample_design import SpaceFillingDesign
from yoco_deploy.space import SearchSpace

# ---- remote devices: bundle out, results in ----------------------------------------------

PLAN = "plan.json"
RUNNER = "runner.pyz"


_PYZ_MAIN = "from yoco_deploy.runtime.runner import main\n\nraise SystemExit(main())\n"


def pack_runner(dest: Path) -> Path:
    """A zip application of :mod:`yoco_deploy.runtime` (a leaf: numpy and onnxruntime are
    all it needs), run on the device as ``python runner.pyz BUNDLE``."""
    import zipfile

    import yoco_deploy
    from yoco_deploy import runtime

    tmp = dest.with_name(dest.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as pyz:
        pyz.write(yoco_deploy.__file__, "yoco_deploy/__init__.py")
        for module in sorted(Path(runtime.__file__).parent.glob("*.py")):
            pyz.write(module, f"yoco_deploy/runtime/{module.name}")
        pyz.writestr("__main__.py", _PYZ_MAIN)
    tmp.replace(dest)
    return dest


def write_bundle(
    space: SearchSpace,
    out: Path,
    settings: ProfileSettings,
    model: str,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """ONNX files, plan.json and runner.pyz for a device without torch."""
    import hashlib

    out = Path(out)
    models = out / "models"
    measured = out / "results" / MEASUREMENTS
    if measured.is_file() and measured.stat().st_size:
        raise ProfileError(
            f"{out} already holds results measured on a device; import them first "
            f"(yoco-deploy profile-import {out} --device NAME), or write the new bundle "
            "to another folder: a new plan would orphan them"
        )
    try:
        models.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ProfileError(f"cannot create bundle directory {out}: {err.strerror}") from None
    archs = SpaceFillingDesign(space, settings.seed).sample(settings.n)
    ref = reference_arch(space)
    with export_work(out) as tmp:  # a killed run's exports are cleaned by the next
        builder = ArtifactBuilder(space, settings.fmt, tmp, settings.seed)
        files = {}
        started = time.monotonic()
        todo = [ref, *archs]
        with contextlib.closing(builder):
            for i, arch in enumerate(todo):
                target = models / f"{arch.arch_id}.onnx"
                if not target.exists():  # re-running an interrupted bundle skips done files
                    if arch.arch_id not in builder.built:  # the next few, in parallel
                        ahead = todo[i : i + 2 * builder.workers]
                        builder.prepare(
                            [a for a in ahead if not (models / f"{a.arch_id}.onnx").exists()]
                        )
                    shutil.move(str(builder.build(arch)), target)
                    builder.release(arch.arch_id)
                files[arch.arch_id] = f"models/{target.name}"
                if progress:
                    eta = (time.monotonic() - started) / (i + 1) * (len(archs) - i)
                    progress(i + 1, len(archs) + 1, eta, f"export {arch.arch_id}")
    jobs = plan_jobs(archs, settings.shapes, settings.seed)
    record = device_record("bundle", space, settings, {}, model)
    plan = {
        "schema": DEVICE_SCHEMA,
        "record": record,
        "session": settings.session.to_dict(),
        "vocab_size": space.dims.vocab_size,
        "protocol": settings.protocol.to_dict(),
        "reference": {"file": files[ref.arch_id], "arch": ref.to_dict()},
        "jobs": [
            {
                "arch_id": j.arch_id,
                "arch": j.arch,
                "batch": j.batch,
                "seq_len": j.seq_len,
                "file": files[j.arch_id],
            }
            for j in jobs
        ],
    }
    plan["plan_id"] = hashlib.sha256(json.dumps(plan, sort_keys=True).encode()).hexdigest()[:12]
    (out / PLAN).write_text(json.dumps(plan, indent=1) + "\n")
    pack_runner(out / RUNNER)
    return plan


def import_bundle(
    bundle: Path,
    out: Path,
    name: str,
    repair: bool = False,
    say: Callable[[str], None] = lambda line: None,
) -> int:
    """Append a bundle's results to ``out`` (a profile directory), one writer per profile
    folder (the lock ``profile`` takes); return new rows. Rows the bundle's plan does not
    hold are refused (``repair``: set aside, in either file); rows already in the profile,
    or repeated in the results, are skipped and ``say`` counts them."""
    from yoco_deploy.util.lock import exclusive

    bundle, out = Path(bundle), Path(out)
    plan, record = _read_bundle(bundle, name)
    source = open_log(bundle / "results", repair, _plan_check(bundle, plan))
    if repair:
        say(runtime.repair_note(source.path, source.set_aside))
    with exclusive(out.with_name(out.name + ".lock"), f"profile folder {out}"):
        log = prepare_profile_dir(out, record, repair)
        if repair:
            say(runtime.repair_note(log.path, log.set_aside))
        return _append_new(source, log, say)


def _read_bundle(bundle: Path, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The bundle's plan and the device record its results will be imported under."""
    try:
        plan = json.loads((bundle / PLAN).read_text())
        fingerprint = json.loads((bundle / "results" / DEVICE).read_text())
    except OSError as err:
        raise ProfileError(
            f"{bundle} has no {Path(err.filename).name}: run `python runner.pyz {bundle}` on "
            "the device first, then copy the whole directory back"
        ) from None
    except ValueError as err:
        raise ProfileError(f"{bundle}: unreadable plan or device file ({err})") from None
    if not isinstance(plan, dict) or not isinstance(fingerprint, dict) or "record" not in plan:
        raise ProfileError(
            f"{bundle}: {PLAN} or results/{DEVICE} is not what profile-bundle and runner.pyz "
            "write; copy the whole directory back from the device"
        )
    if fingerprint.get("plan") != plan.get("plan_id"):
        raise ProfileError(f"{bundle}: results belong to another plan than {PLAN}")
    fingerprint = {k: v for k, v in fingerprint.items() if k != "plan"}
    record = {**plan["record"], "name": name, "fingerprint": fingerprint, "created": time.time()}
    return plan, record


def _plan_check(bundle: Path, plan: dict[str, Any]) -> runtime.RowCheck:
    """``row_problem``, and: the row measures one of the plan's jobs (or its reference)."""
    try:
        shapes = {(j["batch"], j["seq_len"]) for j in plan["jobs"]}
        jobs = {
            runtime.job_key(j["arch_id"], j["batch"], j["seq_len"]): j["arch"] for j in plan["jobs"]
        }
    except (KeyError, TypeError):
        raise ProfileError(
            f"{bundle}: {PLAN} lists no jobs as profile-bundle writes them; copy the whole "
            "directory back from the device"
        ) from None
    refs = {runtime.job_key(runtime.REFERENCE_ID, b, s) for b, s in shapes}

    def check(row: dict[str, Any]) -> str | None:
        why = row_problem(row)
        if why:
            return why
        if (
            row["key"] in refs
            if row["kind"] == "reference"
            else jobs.get(row["key"]) == row["arch"]
        ):
            return None
        return f"measures {row['key']}, which {bundle / PLAN} does not plan (another bundle's row?)"

    return check


def _append_new(source: runtime.MeasurementLog, log: runtime.MeasurementLog, say) -> int:
    """Append the source's rows the profile does not hold yet, each once: a row appears
    again when results are imported again (skipped quietly) or when the results file
    repeats it (skipped, and said)."""

    def identity(row: dict[str, Any]) -> tuple:
        return row["key"], row.get("session"), row.get("t")

    imported = {identity(r) for r in log.rows}
    added: set[tuple] = set()
    repeated = 0
    for row in source.rows:
        key = identity(row)
        if key in added:
            repeated += 1
        elif key not in imported:
            log.append(row)
            added.add(key)
    if repeated:
        rows = "1 row that repeats" if repeated == 1 else f"{repeated} rows that repeat"
        say(f"{source.path}: skipped {rows} a row above (the same measurement)")
    return len(added)
