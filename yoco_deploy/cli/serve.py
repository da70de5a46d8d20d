"""``yoco-deploy serve``: a bundle behind Ray Serve, with Ray's request batching."""

from __future__ import annotations

import contextlib
import os
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
    """Serve a bundle over HTTP with Ray Serve until Ctrl-C (or SIGTERM).

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
        # on a cluster RAY_ADDRESS names, only this app is removed at the end: Serve and
        # the other apps there are not this command's to stop
        joined = bool(os.environ.get("RAY_ADDRESS"))
        if not joined:
            serve_ray.check_port(host, port)
        name = serve_ray.app_name(bundle)
        try:
            ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
            _stop_on_signals()  # after Ray's own handlers, which abort on SIGTERM
            ray_serve.start(http_options={"host": host, "port": port})
            try:
                ray_serve.run(serve_ray.application(bundle, settings), name=name, blocking=False)
            except (RuntimeError, TimeoutError) as err:  # a replica that failed to start
                raise YocoError(f"Ray Serve could not start {bundle}: {err}") from None
            where = "the cluster's Serve address" if joined else f"http://{host}:{port}/"
            typer.echo(
                f"serving {bundle} at {where} (batches of up to {settings.max_batch_size}, "
                f"{replicas} replica{'s' * (replicas > 1)}); Ctrl-C or SIGTERM stops",
                err=True,
            )
            try:
                while True:  # short sleeps: Ctrl-C may land on one of Ray's threads, and
                    time.sleep(0.5)  # Python runs its handler when the main thread wakes
            except KeyboardInterrupt:
                typer.echo("stopping", err=True)
        finally:
            if ray.is_initialized():
                if joined:
                    with contextlib.suppress(Exception):
                        ray_serve.delete(name)
                else:
                    ray_serve.shutdown()
                ray.shutdown()


def _stop_on_signals() -> None:
    """Ctrl-C and SIGTERM end the wait below, so Serve and Ray are shut down (Ray's core
    installs a SIGTERM handler that aborts; a process started in the background by a
    shell inherits SIGINT ignored)."""
    import signal

    from yoco_deploy.errors import Terminated

    def stop(signum, frame):
        raise Terminated

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, signal.default_int_handler)


COMMANDS = {"serve": serve}
