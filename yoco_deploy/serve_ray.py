"""Serve a bundle behind Ray Serve (``pip install 'yoco-deploy[serve]'``).

One deployment per bundle; each replica opens the bundle with ``load_bundle`` (its checks,
its recorded session settings) and Ray Serve's own request batching (``@serve.batch``)
gathers concurrent requests into one ONNX Runtime run of at most the target's batch, the
shape the bundle's latency budget was measured at. Nothing sits between the HTTP request
and ``Bundle.classify`` but Ray. Replicas scale across a Ray cluster (``replicas``).

    yoco-deploy serve bundles/BUNDLE                                  # the CLI
    serve run --name yoco-BUNDLE yoco_deploy.serve_ray:app_builder bundle=bundles/BUNDLE

A request is ``POST /`` with ``{"text": "..."}`` (one class) or ``{"texts": [...]}`` (a
list of them); each class is ``{"label": NAME, "score": P}``.
"""

from __future__ import annotations

import asyncio
import json
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse

MAX_TEXTS = 1024  # per request: a larger list is a client's batch job, not a request
# How long a batch waits for more requests once the first arrives: a fraction of one
# int8 MiniLM run, so a lone request is barely delayed.
DEFAULT_WAIT_S = 0.005


@dataclass(frozen=True)
class ServeSettings:
    """How a bundle is served: the largest batch Ray gathers (1: batching off), how long
    a batch waits for more requests, and how many replicas run it."""

    max_batch_size: int
    batch_wait_timeout_s: float = DEFAULT_WAIT_S
    replicas: int = 1

    def __post_init__(self) -> None:
        from yoco_deploy.errors import YocoError

        if self.max_batch_size < 1 or self.replicas < 1 or self.batch_wait_timeout_s < 0:
            raise YocoError(
                f"serve: max batch size {self.max_batch_size} and replicas {self.replicas} "
                f"must be at least 1, the batch wait {self.batch_wait_timeout_s} s at least 0"
            )

    @classmethod
    def for_bundle(cls, bundle: str | Path, **overrides: Any) -> ServeSettings:
        """The target's batch (what the bundle was budgeted and timed at) as the largest
        batch, unless ``overrides`` says otherwise."""
        from yoco_deploy.bundle import load_bundle

        given = {k: v for k, v in overrides.items() if v is not None}
        return cls(**{"max_batch_size": load_bundle(bundle).manifest.batch, **given})


@serve.deployment
class BundleServer:
    """One replica: the bundle, and a batched classify."""

    def __init__(self, bundle: str, settings: ServeSettings):
        from yoco_deploy.bundle import load_bundle

        self.bundle = load_bundle(bundle)
        self.batched.set_max_batch_size(settings.max_batch_size)
        self.batched.set_batch_wait_timeout_s(settings.batch_wait_timeout_s)

    @serve.batch(max_batch_size=1, batch_wait_timeout_s=DEFAULT_WAIT_S)
    async def batched(self, texts: list[str]) -> list[dict[str, Any]]:
        predictions = self.bundle.classify(texts, batch_size=len(texts))
        return [{"label": p.name, "score": p.score} for p in predictions]

    async def __call__(self, request: Request):
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _bad('the body is not JSON: send {"text": "..."} or {"texts": [...]}')
        texts, error = _texts_of(body)
        if error:
            return _bad(error)
        results = await asyncio.gather(*(self.batched(t) for t in texts))
        return results if isinstance(body.get("texts"), list) else results[0]


def _texts_of(body: Any) -> tuple[list[str], str | None]:
    """The texts a request asks for, or what is wrong with it."""
    if not isinstance(body, dict) or ("text" in body) == ("texts" in body):
        return [], 'send a JSON object with "text": "..." or "texts": [...], one of them'
    texts = [body["text"]] if "text" in body else body["texts"]
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        return [], '"text" must be a string and "texts" a list of strings'
    if not all(t.strip() for t in texts):  # in a batch, its error would fail its neighbours
        return [], "every text must hold something besides spaces"
    if not 1 <= len(texts) <= MAX_TEXTS:
        return [], f'"texts" must hold 1 to {MAX_TEXTS} strings, got {len(texts)}'
    return texts, None


def _bad(message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=400)


def application(bundle: str | Path, settings: ServeSettings):
    """The Ray Serve application serving ``bundle`` (``serve.run`` it, or deploy it)."""
    # the replica queue must hold a whole batch, or @serve.batch never fills one
    ongoing = max(100, 2 * settings.max_batch_size)
    return BundleServer.options(num_replicas=settings.replicas, max_ongoing_requests=ongoing).bind(
        str(Path(bundle).resolve()), settings
    )


def app_builder(args: dict[str, str]):
    """For ``serve run yoco_deploy.serve_ray:app_builder bundle=PATH [max_batch_size=N]
    [batch_wait_timeout_s=S] [replicas=N]``."""
    if "bundle" not in args:
        raise ValueError("give the bundle: serve run yoco_deploy.serve_ray:app_builder bundle=PATH")
    numbers = {"max_batch_size": int, "batch_wait_timeout_s": float, "replicas": int}
    unknown = set(args) - set(numbers) - {"bundle"}
    if unknown:
        raise ValueError(f"unknown arguments {sorted(unknown)}: bundle, {', '.join(numbers)}")
    given = {k: numbers[k](v) for k, v in args.items() if k in numbers}
    return application(args["bundle"], ServeSettings.for_bundle(args["bundle"], **given))


def app_name(bundle: str | Path) -> str:
    """The Serve application's name: ``yoco-`` and the bundle folder's, cut to what Ray
    shows (on a shared cluster, what ``yoco-deploy serve`` removes when it stops)."""
    folder = "".join(c if c.isalnum() or c in "-_." else "-" for c in Path(bundle).name)
    return f"yoco-{folder[:60]}"


def check_port(host: str, port: int) -> None:
    """A port Ray Serve's proxy could not bind fails now: Ray would retry it forever."""
    from yoco_deploy.errors import YocoError

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as s:
            # as Ray's proxy binds: a port held only by closed connections is free
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(address)
    except OSError as err:
        raise YocoError(
            f"cannot listen on {host}:{port} ({err.strerror}): pick another --port or --host"
        ) from None


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on ``host`` now, as the operating system picks one (for a test or a
    benchmark: another process may take it before Serve binds it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]
