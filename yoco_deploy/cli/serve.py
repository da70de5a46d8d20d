"""``yoco-deploy serve``: a bundle behind Ray Serve, with Ray's request batching."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from yoco_deploy.cli.common import user_errors

INSTALL = "Ray Serve is not installed: pip install 'yoco-deploy[serve]' (or 'ray[serve]')"


def serve(
    bundle: Annotated[Path, typer.Argument(help="A bundle folder written by ship or search.")],
    host: Annotated[
        str, typer.Option(help="Address to listen on (0.0.0.0: every interface).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="HTTP port.")] = 8000,
    max_batch: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Largest batch Ray gathers from concurrent requests. Default: the batch "
            "the bundle's target was budgeted at (1 turns batching off).",
        ),
    ] = None,
    batch_wait_ms: Annotated[
        float,
        typer.Option(min=0, help="How long a batch waits for more requests once one came."),
    ] = 5.0,
    replicas: Annotated[int, typer.Option(min=1, help="Replicas (across a Ray cluster).")] = 1,
) -> None:
    """Serve a bundle over HTTP with Ray Serve until Ctrl-C.

    `POST /` with `{"text": "..."}` answers `{"label": ..., "score": ...}`; with
    `{"texts": [...]}` a list of them. Concurrent requests are batched by Ray Serve's
    `@serve.batch` up to the target's batch. Starts a local Ray instance, or joins the
    cluster RAY_ADDRESS names. Needs the serve extra: pip install 'yoco-deploy[serve]'.

    Example: yoco-deploy serve bundles/BUNDLE --port 8000
    then: curl -d '{"text": "a gripping film"}' http://127.0.0.1:8000/
    """
    with user_errors():
        from yoco_deploy.errors import YocoError

        try:
            import ray
            from ray import serve as ray_serve

            from yoco_deploy import serve_ray
        except ImportError:
            raise YocoError(INSTALL) from None
        settings = serve_ray.ServeSettings.for_bundle(
            bundle,
            max_batch_size=max_batch,
            batch_wait_timeout_s=batch_wait_ms / 1000,
            replicas=replicas,
        )  # fmt: skip  (the bundle is opened and checked here, before Ray starts)
        _check_port(host, port)
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
        try:
            ray_serve.start(http_options={"host": host, "port": port})
            ray_serve.run(serve_ray.application(bundle, settings), blocking=False)
            typer.echo(
                f"serving {bundle} at http://{host}:{port}/ (batches of up to "
                f"{settings.max_batch_size}, {replicas} replica{'s' * (replicas > 1)}); "
                "Ctrl-C stops",
                err=True,
            )
            try:
                while True:  # short sleeps: Ctrl-C may land on one of Ray's threads, and
                    time.sleep(0.5)  # Python runs its handler when the main thread wakes
            except KeyboardInterrupt:
                typer.echo("stopping", err=True)
        finally:
            ray_serve.shutdown()
            ray.shutdown()


def _check_port(host: str, port: int) -> None:
    """A port Ray Serve's proxy could not bind fails now: Ray would retry it forever."""
    import socket

    from yoco_deploy.errors import YocoError

    try:
        with socket.socket() as s:
            s.bind((host, port))
    except OSError as err:
        raise YocoError(
            f"cannot listen on {host}:{port} ({err.strerror}): pick another --port or --host"
        ) from None


COMMANDS = {"serve": serve}
