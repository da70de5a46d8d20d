"""Time a profile's sub-BERTs beside a reference, in process (``yoco-deploy profile``) or on
a device without torch (a Raspberry Pi, a Jetson, a bare server): ``yoco-deploy
profile-bundle`` packs this package into ``runner.pyz``, which needs only numpy and
onnxruntime:

    python runner.pyz BUNDLE_DIR [--provider cpu|cuda|tensorrt|openvino|...] [--threads T]

It writes BUNDLE_DIR/results/device.json and appends to
BUNDLE_DIR/results/measurements.jsonl; ``yoco-deploy profile-import`` brings them home.

Protocol: warm-up, then interleaved rounds: each round times ``chunk`` runs of the model,
each followed by a run of a reference model, and gives one ratio (the median of its
paired ratios). Rounds go on until the 95% interval of the rounds' median ratio is
narrower than ``max_spread`` of it (at least ``min_runs``, at most ``max_runs`` runs,
or ``max_seconds``). The row stores the latency in milliseconds, the ratio, its interval
and the number of rounds. The reference is also timed on its own every ``ref_every``
jobs; when it drifts by more than ``drift_tol``, the jobs since the previous reference
are measured again. Rows are appended and flushed one by one; a rerun skips every job
already measured.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from yoco_deploy.runtime.errors import RunnerError
from yoco_deploy.runtime.host import device_fingerprint
from yoco_deploy.runtime.measurements import MeasurementLog
from yoco_deploy.runtime.rounds import REFERENCE_ID, Protocol, job_key, make_feeds, measure
from yoco_deploy.runtime.sealed import repair_note
from yoco_deploy.runtime.session import PROVIDERS, SPINNING, OrtBackend, SessionSpec


@dataclass(frozen=True)
class Job:
    arch_id: str
    batch: int
    seq_len: int
    arch: dict | None = None

    @property
    def key(self) -> str:
        return job_key(self.arch_id, self.batch, self.seq_len)


def print_progress(done: int, total: int, eta_s: float | None, key: str) -> None:
    eta = f", ETA {eta_s / 60:.1f} min" if eta_s is not None else ""
    print(f"[{done}/{total}{eta}] {key}", file=sys.stderr, flush=True)


def run_jobs(
    jobs: Iterable[Job],
    model_path: Callable[[Job], Path],
    reference_path: Path,
    log: MeasurementLog,
    backend,
    protocol: Protocol = Protocol(),
    vocab_size: int = 30522,
    progress: Callable[[int, int, float | None, str], None] = print_progress,
    release: Callable[[Job], None] = lambda job: None,
    session_id: str | None = None,
    prepare: Callable[[list[Job]], None] = lambda jobs: None,
) -> int:
    """Measure every job not yet in ``log``; return how many rows were written.
    ``prepare``: called with each stretch's jobs before any of them is timed (exports
    them all at once, so nothing but timing runs while they are timed)."""
    jobs = list(jobs)
    done = set(log.latest())
    todo = [j for j in jobs if j.key not in done]
    total, finished = len(jobs), len(jobs) - len(todo)
    if not todo:
        return 0
    session_id = session_id or f"{int(time.time())}-{os.getpid()}"
    shapes = sorted({(j.batch, j.seq_len) for j in jobs})
    feeds = {s: make_feeds(*s, vocab_size=vocab_size) for s in shapes}
    reference = backend.load(reference_path)
    written = 0

    def time_reference() -> dict[tuple[int, int], float]:
        nonlocal written
        out = {}
        for batch, seq in shapes:
            stats = measure(backend, reference, feeds[(batch, seq)], protocol)
            log.append(
                {
                    "kind": "reference",
                    "key": job_key(REFERENCE_ID, batch, seq),
                    "batch": batch,
                    "seq_len": seq,
                    "t": time.time(),
                    "session": session_id,
                    **stats.to_dict(),
                }
            )
            written += 1
            out[(batch, seq)] = stats.median_ms
        return out

    def measure_job(job: Job, remeasure: bool) -> None:
        nonlocal written
        handle = backend.load(model_path(job))
        stats = measure(backend, handle, feeds[(job.batch, job.seq_len)], protocol, reference)
        del handle
        log.append(
            {
                "kind": "model",
                "key": job.key,
                "arch_id": job.arch_id,
                "arch": job.arch,
                "batch": job.batch,
                "seq_len": job.seq_len,
                "remeasured": remeasure,
                "t": time.time(),
                "session": session_id,
                **stats.to_dict(),
            }
        )
        written += 1

    ref = time_reference()
    stretch: list[Job] = []
    started = time.monotonic()
    for i, job in enumerate(todo):
        if not stretch:
            prepare(todo[i : i + protocol.ref_every])
        measure_job(job, remeasure=False)
        stretch.append(job)
        finished += 1
        rate = (time.monotonic() - started) / (i + 1)
        progress(finished, total, rate * (len(todo) - i - 1), job.key)
        last = i == len(todo) - 1
        if len(stretch) >= protocol.ref_every or last:
            new_ref = time_reference()
            drift = max(abs(new_ref[s] / ref[s] - 1) for s in shapes)
            ref = new_ref
            if drift > protocol.drift_tol:
                # the machine changed speed during the stretch: measure it again
                for again in stretch:
                    measure_job(again, remeasure=True)
            for finished_job in stretch:
                release(finished_job)
            stretch = []
    return written


# ---- standalone use on a remote device ------------------------------------------------


def _install_sigterm() -> None:
    def handler(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Time a yoco-deploy profile bundle.")
    parser.add_argument("bundle", type=Path, help="bundle directory (holds plan.json)")
    parser.add_argument("--provider", default=None, help=f"one of {', '.join(PROVIDERS)}")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads")
    parser.add_argument("--spinning", choices=SPINNING, default=None, help="idle threads")
    parser.add_argument("--repair", action="store_true", help="set unreadable rows aside")
    args = parser.parse_args(argv)
    try:
        plan_path = args.bundle / "plan.json"
        if not plan_path.is_file():
            raise RunnerError(f"{plan_path} not found: pass a directory made by profile-bundle")
        plan = json.loads(plan_path.read_text())
        recorded = SessionSpec.from_dict(plan.get("session") or {"threads": plan.get("threads")})
        spec = recorded.with_options(
            provider=args.provider, threads=args.threads, spinning=args.spinning
        )
        backend = OrtBackend(spec)  # an unavailable provider fails before results/ is made
        results = args.bundle / "results"
        results.mkdir(exist_ok=True)
        log = MeasurementLog(results / "measurements.jsonl", repair=args.repair)
        if args.repair:
            print(repair_note(log.path, log.set_aside), file=sys.stderr)
        device = {**device_fingerprint(spec), "plan": plan["plan_id"]}
        (results / "device.json").write_text(json.dumps(device, indent=2) + "\n")
        jobs = [Job(j["arch_id"], j["batch"], j["seq_len"], j.get("arch")) for j in plan["jobs"]]
        files = {j["arch_id"]: j["file"] for j in plan["jobs"]}
        protocol = Protocol.from_dict(plan.get("protocol", {}))
        _install_sigterm()
        written = run_jobs(
            jobs,
            lambda job: args.bundle / files[job.arch_id],
            args.bundle / plan["reference"]["file"],
            log,
            backend,
            protocol,
            vocab_size=plan.get("vocab_size", 30522),
        )
        print(f"done: {written} new rows in {log.path}", file=sys.stderr)
        return 0
    except RunnerError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: rows so far are saved; run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
