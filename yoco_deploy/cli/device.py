"""CLI commands for devices: profile, profile-bundle, profile-import, fit, predict."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from yoco_deploy.cli.common import (
    ArchOpt,
    JsonOpt,
    ModelOpt,
    SpaceOpt,
    arch_arg,
    print_json,
    progress_bar,
    space_for,
    table_console,
    user_errors,
)

SeqOpt = Annotated[
    list[int] | None,
    typer.Option("--seq-len", help="Sequence length(s) to profile (repeat the option)."),
]
BatchOpt = Annotated[
    list[int] | None, typer.Option("--batch", help="Batch size(s) to profile (repeat).")
]
ProviderOpt = Annotated[
    str, typer.Option(help="Execution provider: cpu, cuda, tensorrt, openvino, dml, coreml.")
]
ThreadsOpt = Annotated[int, typer.Option(min=1, help="Intra-op threads (set explicitly).")]
SpinningOpt = Annotated[
    str,
    typer.Option(
        help="Idle worker threads: stop-after-run (spin during a run, stop when it returns; "
        "fast, and safe with several sessions in one process), on (ONNX Runtime's default) "
        "or off. Bundles are run the way they are profiled."
    ),
]
IoBindingOpt = Annotated[
    bool | None,
    typer.Option(
        help="Bind inputs and outputs on the device once (default: on for cuda and "
        "tensorrt, so a GPU timing measures the model and not the copies)."
    ),
]
FormatOpt = Annotated[
    str,
    typer.Option(
        "--format", help="What ships, hence what is timed: fp32, fused, int8 (CPU), fp16 (GPU)."
    ),
]
ProfilesOpt = Annotated[Path, typer.Option(help="Where profiles live.")]


def _settings(
    n, seq_len, batch, provider, threads, spinning, fmt, seed, io_binding=None, local=True
):
    from yoco_deploy.device.profile_store import ProfileError
    from yoco_deploy.device.profiling import ProfileSettings
    from yoco_deploy.export.sub_bert import FORMATS
    from yoco_deploy.runtime import SessionSpec, resolve_provider

    if fmt not in FORMATS:
        raise ProfileError(f"unknown --format {fmt!r}; choose from {', '.join(FORMATS)}")
    session = SessionSpec(
        provider=provider, threads=threads, spinning=spinning, io_binding=io_binding
    )
    cores = os.cpu_count() or 1
    if local and threads > 2 * cores:
        raise ProfileError(
            f"--threads {threads} on a machine with {cores} logical cores: timings would "
            "measure the scheduler, not the model (the limit is twice the core count); use "
            "at most the core count"
        )
    if provider != "cpu":
        resolve_provider(provider)  # fail before any work starts
    shapes = tuple((b, s) for b in (batch or [1]) for s in (seq_len or [128]))
    return ProfileSettings(n=n, shapes=shapes, session=session, fmt=fmt, seed=seed)


def profile(
    model: ModelOpt,
    device: Annotated[str, typer.Option(help="Device name: the profile goes to PROFILES/NAME.")],
    n: Annotated[
        int, typer.Option(min=2, help="Sub-BERTs to profile (min and max included).")
    ] = 150,
    seq_len: SeqOpt = None,
    batch: BatchOpt = None,
    provider: ProviderOpt = "cpu",
    threads: ThreadsOpt = 2,
    spinning: SpinningOpt = "stop-after-run",
    io_binding: IoBindingOpt = None,
    fmt: FormatOpt = "int8",
    seed: Annotated[int, typer.Option(help="Seed of the design and the order.")] = 0,
    until: Annotated[
        str | None,
        typer.Option(help="Stop early once cross-validated accuracy reaches it: within10=0.95."),
    ] = None,
    near: Annotated[
        list[float] | None,
        typer.Option(help="With --until: also refine near these budgets (ms; repeat)."),
    ] = None,
    profiles_dir: ProfilesOpt = Path("profiles"),
    space_file: SpaceOpt = None,
    repair: Annotated[
        bool, typer.Option(help="Set unreadable measurement rows aside (a backup is kept).")
    ] = False,
    exclude_profile: Annotated[
        list[Path] | None,
        typer.Option(help="Skip sub-BERTs already in this profile (e.g. to build a test set)."),
    ] = None,
    prior: Annotated[
        Path | None,
        typer.Option(
            help="With --until: judge the predictor adapted from this other device's "
            "predictor (fit --prior), starting from 10 sub-BERTs, 5 more a round."
        ),
    ] = None,
) -> None:
    """Time sub-BERTs on this machine, as shipped (exported ONNX in ONNX Runtime).

    Samples the min, the max and a space-filling design; exports each in --format with
    random weights (latency depends on shapes); times it against a reference model
    re-timed every few models. Interrupt it at will: rerunning the same command resumes.

    Example: yoco-deploy profile --model minilm --device my-laptop --n 150
    """
    with user_errors():
        from yoco_deploy.device.profile_store import ProfileError, profiled_arch_ids, read_device
        from yoco_deploy.device.profiling import parse_until, profile_device

        settings = _settings(n, seq_len, batch, provider, threads, spinning, fmt, seed, io_binding)
        target = parse_until(until) if until else None
        from yoco_deploy.names import check_name

        check_name(device, "--device")
        if near and not target:
            raise ProfileError(
                "--near refines around budgets while --until is pursued; add --until"
            )
        if prior is not None and not target:
            raise ProfileError("--prior judges when --until is met; add --until (or fit --prior)")
        if any(ms <= 0 for ms in near or ()):
            raise ProfileError(f"--near budgets must be positive milliseconds, got {near}")
        for excluded in exclude_profile or []:
            read_device(excluded)  # a typo is an error, not an empty exclusion
        exclude = set().union(*(profiled_arch_ids(p) for p in exclude_profile or []))
        space = space_for(model, space_file)
        prior_model = None
        if prior is not None:
            from yoco_deploy.device.predictor import LatencyPredictor

            prior_model = LatencyPredictor.load(prior, space).model
        from yoco_deploy.cli.common import quiet_transformers

        quiet_transformers()
        for _, seq in settings.shapes:  # before the progress bar: a one-line error
            space.dims.check_seq_len(seq)
        with progress_bar(f"profiling {device}") as update:
            result = profile_device(
                space,
                profiles_dir / device,
                device,
                settings,
                model,
                progress=update,
                until=target,
                near_ms=tuple(near or ()),
                first_round=min(n, 10 if prior_model else 40),
                step=5 if prior_model else 10,
                exclude=exclude,
                repair=repair,
                prior=prior_model,
            )
        if repair:
            from yoco_deploy.runtime import repair_note

            log = profiles_dir / device / "measurements.jsonl"
            typer.echo(repair_note(log, result.set_aside), err=True)
        for r in result.rounds:
            typer.echo(
                f"after {r['profiled']}: cross-validated {r['metric']} = "
                f"{r['value']:.3f} (target {r['target']})",
                err=True,
            )
        typer.echo(json.dumps(result.to_dict(), indent=2))


def profile_bundle(
    model: ModelOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="Bundle directory to write.")],
    n: Annotated[int, typer.Option(min=2, help="Sub-BERTs to include.")] = 150,
    seq_len: SeqOpt = None,
    batch: BatchOpt = None,
    threads: ThreadsOpt = 2,
    spinning: SpinningOpt = "stop-after-run",
    fmt: FormatOpt = "int8",
    seed: Annotated[int, typer.Option(help="Seed of the design and the order.")] = 0,
    space_file: SpaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write ONNX files and a standalone runner for a device without torch.

    Copy OUT to the device and run `python runner.pyz OUT --provider cpu` there (needs only
    onnxruntime and numpy); copy it back and run `yoco-deploy profile-import OUT`.
    """
    with user_errors():
        from yoco_deploy.cli.common import quiet_transformers
        from yoco_deploy.device.profile_store import ProfileError
        from yoco_deploy.device.remote_profile import write_bundle
        from yoco_deploy.util.atomic import check_output

        settings = _settings(n, seq_len, batch, "cpu", threads, spinning, fmt, seed, local=False)
        written = (out / "models", out / "plan.json", out / "runner.pyz")
        check_output("--out", out, (model, space_file), ProfileError, written)
        space = space_for(model, space_file)
        quiet_transformers()
        for _, seq in settings.shapes:
            space.dims.check_seq_len(seq)
        with progress_bar("exporting") as update:
            plan = write_bundle(space, out, settings, model, progress=update)
        command = f"python runner.pyz {out} --provider cpu --threads {threads}"
        if as_json:
            print_json({"bundle": str(out), "jobs": len(plan["jobs"]), "run_on_device": command})
            return
        typer.echo(f"wrote {len(plan['jobs'])} jobs to {out}; on the device: {command}", err=True)


def profile_import(
    bundle: Annotated[Path, typer.Argument(help="A bundle directory holding results/.")],
    device: Annotated[str, typer.Option(help="Device name: results go to PROFILES/NAME.")],
    profiles_dir: ProfilesOpt = Path("profiles"),
    repair: Annotated[
        bool,
        typer.Option(
            help="Set torn, edited or unplanned rows aside first, in the results and in the "
            "profile (intact rows and a backup are kept)."
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Bring a remote device's results into profiles/NAME (rerunning adds only new rows)."""
    with user_errors():
        from yoco_deploy.device.remote_profile import import_bundle
        from yoco_deploy.names import check_name

        say = lambda line: typer.echo(line, err=True)  # noqa: E731
        profile = profiles_dir / check_name(device, "--device")
        added = import_bundle(bundle, profile, device, repair, say)
        if as_json:
            print_json({"profile": str(profiles_dir / device), "added_rows": added})
            return
        typer.echo(f"imported {added} new rows into {profiles_dir / device}", err=True)


def fit(
    profile_path: Annotated[Path, typer.Option("--profile", help="A profile directory.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Predictor file (.json) to write.")],
    test: Annotated[
        Path | None,
        typer.Option(help="A second profile (other sub-BERTs, another run) to evaluate on."),
    ] = None,
    holdout: Annotated[float, typer.Option(min=0.0, max=0.5, help="Held-out share.")] = 0.2,
    seed: Annotated[int, typer.Option(help="Seed of the split and the trees.")] = 0,
    prior: Annotated[
        Path | None,
        typer.Option(help="Another device's predictor (same space) to adapt: from 5 rows up."),
    ] = None,
    repair: Annotated[
        bool,
        typer.Option(
            help="Set torn or edited measurement rows aside first (intact rows and a backup "
            "are kept)."
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Fit a latency predictor: linear, boosted trees and a FLOPs baseline compared by
    cross-validation; metrics on held-out sub-BERTs; a predicted-vs-measured PNG beside it.
    With --prior, the prior (scaled, then corrected as far as the measurements support)
    competes too, and the predictor records it.

    Example: yoco-deploy fit --profile profiles/my-laptop --out predictors/my-laptop.json

    A new device from 10 measurements, another device's predictor as the prior:
    yoco-deploy profile --device my-box --n 10 && yoco-deploy fit --profile profiles/my-box
    --prior predictors/x86-2c-ort-cpu-minilm.json --out predictors/my-box.json
    """
    with user_errors():
        from rich.table import Table

        from yoco_deploy.device.fit import fit_profile
        from yoco_deploy.device.profile_store import DEVICE, MEASUREMENTS, ProfileError
        from yoco_deploy.util.atomic import check_output

        folders = [d for d in (profile_path, test) if d is not None]
        read = [*folders, *(d / DEVICE for d in folders), *(d / MEASUREMENTS for d in folders)]
        read += [prior] if prior is not None else []
        check_output("--out", out, read, ProfileError, (out, out.with_suffix(".png")))
        if repair:
            from yoco_deploy.device.profile_store import MEASUREMENTS, read_device, repair_log
            from yoco_deploy.runtime import repair_note

            for folder in (profile_path, test):
                if folder is not None:
                    read_device(folder)  # a typo is an error, not an empty repair
                    dropped = repair_log(folder)
                    typer.echo(repair_note(Path(folder) / MEASUREMENTS, dropped), err=True)

        result = fit_profile(profile_path, out, test, holdout, seed, prior=prior)
        if as_json:
            print_json(
                {
                    "predictor": str(result.path),
                    "model": result.predictor.model["type"],
                    "plot": str(result.plot) if result.plot else None,
                    "metrics": result.table,
                }
            )
            return
        chosen = result.predictor.model["type"]
        cv = result.predictor.metrics["selection"][chosen]
        variant = cv.get("variant", chosen)  # a prior's variant, e.g. "prior + ridge 10"
        table = Table(
            title=f"latency predictor {result.path} ({variant}; cross-validated: MAPE "
            f"{cv['mape']:.1%}, ±10% {cv['within10']:.0%})",
            caption="relative to the full model timed beside each sub-BERT; ms: absolute "
            "medians, predictions scaled by that reference",
        )
        columns = ("split", "model", "n", "MAPE", "±5%", "±10%", "Kendall τ", "mean signed",
                   "ms: MAPE / τ")  # fmt: skip
        for col in columns:
            table.add_column(col)
        for r in result.table:
            table.add_row(
                r["split"],
                r["model"],
                str(r["n"]),
                f"{r['mape']:.1%}",
                f"{r['within5']:.0%}",
                f"{r['within10']:.0%}",
                f"{r['kendall_tau']:.3f}",
                f"{r['mean_signed_error']:+.1%}",
                f"{r['ms']['mape']:.1%} / {r['ms']['kendall_tau']:.3f}",
            )
        table_console().print(table)
        if result.plot:
            typer.echo(f"plot: {result.plot}", err=True)


def predict(
    predictor: Annotated[Path, typer.Option(help="A predictor file from `fit`.")],
    arch: ArchOpt,
    seq_len: Annotated[int, typer.Option(min=1)] = 128,
    batch: Annotated[int, typer.Option(min=1)] = 1,
    calibrate: Annotated[
        bool,
        typer.Option(help="Re-time the reference model now and scale to today's speed."),
    ] = False,
) -> None:
    """Predict the latency of a sub-BERT on the predictor's device, as JSON.

    --calibrate times the reference in sessions built as the profile's were."""
    with user_errors():
        from yoco_deploy.device.predictor import LatencyPredictor

        p = LatencyPredictor.load(predictor)
        p.dims.check_seq_len(seq_len)
        p.check_shape(batch, seq_len)
        a = arch_arg(arch)
        ref_ms = None
        if calibrate:
            from yoco_deploy.cli.common import quiet_transformers
            from yoco_deploy.device.calibrate import time_reference

            quiet_transformers()
            ref_ms = time_reference(p, batch, seq_len)
        out = {
            "arch_id": a.arch_id,
            "device": p.device["name"],
            "seq_len": seq_len,
            "batch": batch,
            **p.predict(a, batch, seq_len, ref_ms).to_dict(),
        }
        typer.echo(json.dumps(out, indent=2))


COMMANDS = {
    "profile": profile,
    "profile-bundle": profile_bundle,
    "profile-import": profile_import,
    "fit": fit,
    "predict": predict,
}
