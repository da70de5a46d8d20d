"""`yoco-deploy serve`: a bundle behind Ray Serve, started, asked and stopped as a user
does (the serve extra; `make test-slow` installs it)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from helpers import assert_one_line_error, run, ship_tiny_bundle, write_tiny_task


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from yoco_deploy.train.data import load_task

    root = tmp_path_factory.mktemp("serve")
    model_dir, data_dir = write_tiny_task(root, n_train=10, n_dev=8)
    # fp32: int8's dynamic quantization scales by the batch, so scores would depend on
    # which requests Ray happened to batch together
    data = load_task("sst2", data_dir)
    return ship_tiny_bundle(model_dir, data, root / "bundles", fmt="fp32").path


def test_serve_without_ray_is_one_error_line(bundle, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as where the serve extra is missing
    assert_one_line_error(run("serve", bundle), "pip install 'yoco-deploy[serve]'")


@pytest.mark.slow  # needs the serve extra, which make test-slow installs
def test_serve_refuses_a_folder_that_is_not_a_bundle(tmp_path):
    assert_one_line_error(run("serve", tmp_path), str(tmp_path))


@pytest.mark.slow
def test_serve_refuses_a_port_in_use(bundle):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert_one_line_error(run("serve", bundle, "--port", port), f"127.0.0.1:{port}")


def _post(url: str, body: bytes) -> tuple[int, object]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.mark.slow
def test_serve_batches_requests_and_answers_as_the_bundle_does(bundle, tmp_path):
    from yoco_deploy import load_bundle
    from yoco_deploy.serve_ray import free_port

    port = free_port()
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "yoco_deploy.cli", "serve", str(bundle), "--port", str(port),
         "--max-batch", "8"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while "serving " not in (tmp_path / "serve.log").read_text():
            assert server.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(1)
        url = f"http://127.0.0.1:{port}/"
        texts = [f"text number {i} is a good one" if i % 2 else f"bad {i}" for i in range(24)]
        expected = [(p.name, p.score) for p in load_bundle(bundle).classify(texts)]
        with ThreadPoolExecutor(12) as pool:  # concurrent: Ray gathers them into batches
            answers = list(pool.map(lambda t: _post(url, json.dumps({"text": t}).encode()), texts))
        assert all(status == 200 for status, _ in answers)
        got = [(a["label"], a["score"]) for _, a in answers]
        assert [g[0] for g in got] == [e[0] for e in expected]
        assert all(abs(g[1] - e[1]) < 1e-4 for g, e in zip(got, expected, strict=True))
        status, listed = _post(url, json.dumps({"texts": texts[:3]}).encode())
        assert status == 200 and [a["label"] for a in listed] == [e[0] for e in expected[:3]]
        bad_ones = (b"not json", b'{"text": 3}', b'{"texts": []}', b'{"text": "a", "texts": []}',
                    b'{"text": "  "}')  # fmt: skip
        for bad in bad_ones:
            status, answer = _post(url, bad)
            assert status == 400 and "error" in answer, (bad, answer)
    finally:
        # SIGTERM, as a service manager stops it (Ctrl-C's SIGINT is ignored by a
        # process started in the background, as CI may start this suite)
        server.send_signal(signal.SIGTERM)
        try:
            code = server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            code = None
        log.close()
    output = (tmp_path / "serve.log").read_text()
    assert code == 0 and "stopping" in output and "Traceback" not in output, output


@pytest.mark.slow
def test_the_app_is_named_after_its_bundle_folder():
    pytest.importorskip("ray")
    from yoco_deploy.serve_ray import app_name

    assert app_name("bundles/sst2 edge@p99") == "yoco-sst2-edge-p99"
    assert len(app_name("b" * 300)) == len("yoco-") + 60
