"""yoco-deploy latency runner: times ONNX sub-BERTs on the device it runs on.

This one file needs only numpy and onnxruntime, so it runs where torch does not (a
Raspberry Pi, a Jetson, a bare server). ``yoco-deploy profile`` uses the same code in
process; ``yoco-deploy profile-bundle`` copies this file into a bundle directory:

    python runner.py BUNDLE_DIR [--provider cpu|cuda|tensorrt|openvino|...] [--threads T]

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
import gc
import hashlib
import json
import os
import platform
import signal
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

MEASUREMENTS_SCHEMA = 1
PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "dml": "DmlExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "rocm": "ROCMExecutionProvider",
}
GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")
REFERENCE_ID = "reference"


class RunnerError(Exception):
    """A problem the user can fix (bad file, missing provider); printed as one line."""


@dataclass(frozen=True)
class Protocol:
    warmup: int = 5
    min_runs: int = 25  # five rounds: the fewest whose interval means something
    max_runs: int = 100
    chunk: int = 5  # paired runs per round
    max_spread: float = 0.04  # the interval's width over the median ratio (about +-2%)
    max_seconds: float = 30.0
    ref_every: int = 8
    drift_tol: float = 0.15
    decide_runs: int = 200  # how far a measurement goes on for a decision it cannot settle

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Protocol:
        """A plan's protocol; keys of another version's protocol are left to the defaults."""
        names = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in (data or {}).items() if k in names})


# ---- inputs and sessions -----------------------------------------------------------------


def job_key(arch_id: str, batch: int, seq_len: int) -> str:
    return f"{arch_id}@{batch}x{seq_len}"


def make_feeds(batch: int, seq_len: int, vocab_size: int = 30522, seed: int = 0) -> dict:
    """Full-length sequences (latency depends on shapes, not on token values)."""
    rng = np.random.default_rng(seed)
    return {
        "input_ids": rng.integers(1, vocab_size, size=(batch, seq_len), dtype=np.int64),
        "attention_mask": np.ones((batch, seq_len), dtype=np.int64),
        "token_type_ids": np.zeros((batch, seq_len), dtype=np.int64),
    }


def resolve_provider(name: str) -> str:
    import onnxruntime as ort

    full = PROVIDERS.get(name.lower(), name)
    available = ort.get_available_providers()
    if full not in available:
        short = [k for k, v in PROVIDERS.items() if v in available]
        raise RunnerError(
            f"execution provider {name!r} ({full}) is not available in this onnxruntime "
            f"build; available here: {', '.join(short or available)}. Install the matching "
            "package (onnxruntime-gpu for cuda/tensorrt, onnxruntime-openvino for openvino)"
        )
    return full


# How idle worker threads wait for work. ONNX Runtime's default ("on") busy-waits between
# and after runs: fastest for one session, but in a process that alternates sessions (a
# model and its reference) an idle one's spinning threads steal the busy one's cores.
# "off" never spins (slow: every run wakes sleeping threads); "stop-after-run" spins
# during a run and stops as soon as Run() returns (session.force_spinning_stop).
SPINNING = ("on", "off", "stop-after-run")
MAX_THREADS = 512
GRAPH_OPTIMIZATION = ("disabled", "basic", "extended", "all")


@dataclass(frozen=True)
class SessionSpec:
    """How a bundle is run: the one definition of an ONNX Runtime session (provider,
    threads, spinning, graph optimization, provider options) that the profiler, the
    reference timing, ship, the examples and the Python API all build sessions from, and
    that every profile, predictor and manifest records."""

    provider: str = "cpu"
    threads: int | None = None  # intra-op threads; None: ONNX Runtime's default
    spinning: str = "stop-after-run"
    graph_optimization: str = "all"
    provider_options: tuple[tuple[str, str], ...] = ()
    # inputs and outputs bound on the provider's device once, so a GPU timing measures
    # the model and not host-device copies (default: on for GPU providers)
    io_binding: bool | None = None
    # denormal floats flushed to zero (session.set_denormal_as_zero): on real text a
    # trained int8 sub-BERT's softmax and GELU make denormals, and on x86 each costs ~100
    # cycles, so the same model ran 6-7% slower on SST-2 sentences than on the random ids
    # it is profiled with (bench/results/token_values.md); flushed, the token ids no longer
    # change its speed. Records written before this setting existed read as False.
    flush_denormals: bool = True

    def __post_init__(self):
        if not isinstance(self.provider, str) or not (
            self.threads is None or isinstance(self.threads, int)
        ):
            raise RunnerError(f"provider must be a name and threads a whole number: {self!r}")
        short = {v.lower(): k for k, v in PROVIDERS.items()}
        name = self.provider.lower()
        # one spelling per provider ("CUDA", "cuda" and "CUDAExecutionProvider" are one)
        object.__setattr__(
            self, "provider", short.get(name, name if name in PROVIDERS else self.provider)
        )
        object.__setattr__(self, "provider_options", tuple(sorted(self.provider_options)))
        if self.spinning not in SPINNING:
            raise RunnerError(
                f"spinning must be one of {', '.join(SPINNING)}, got {self.spinning!r}"
            )
        if self.graph_optimization not in GRAPH_OPTIMIZATION:
            raise RunnerError(
                f"graph_optimization must be one of {', '.join(GRAPH_OPTIMIZATION)}, "
                f"got {self.graph_optimization!r}"
            )
        if self.threads is not None and not 1 <= self.threads <= MAX_THREADS:
            raise RunnerError(
                f"threads must be between 1 and {MAX_THREADS}, got {self.threads} (ONNX "
                "Runtime creates them all at session start)"
            )
        if not isinstance(self.flush_denormals, bool):
            raise RunnerError(
                f"flush_denormals must be true or false, got {self.flush_denormals!r}"
            )
        if self.io_binding is None:  # resolved once, so equal specs compare equal
            object.__setattr__(self, "io_binding", self.device == "cuda")

    @property
    def provider_name(self) -> str:
        return PROVIDERS.get(self.provider.lower(), self.provider)

    @property
    def device(self) -> str:
        """Where ONNX Runtime keeps bound inputs and outputs for this provider."""
        return "cuda" if self.provider_name in GPU_PROVIDERS else "cpu"

    def to_dict(self) -> dict:
        out = asdict(self)
        out["provider_options"] = dict(self.provider_options)
        return out

    def describe(self) -> str:
        threads = self.threads or "default"
        io = ", I/O bound" if self.io_binding else ""
        denormals = "flushed" if self.flush_denormals else "kept"
        return (
            f"{self.provider}, {threads} threads, spinning {self.spinning}, graph "
            f"optimization {self.graph_optimization}, denormals {denormals}{io}"
        )

    def with_options(self, **given) -> SessionSpec:
        """This spec with some settings changed (None: keep); a changed provider gets its
        own default I/O binding."""
        given = {k: v for k, v in given.items() if v is not None}
        if "provider" in given and "io_binding" not in given:
            given["io_binding"] = None
        return SessionSpec.from_dict({**self.to_dict(), **given}) if given else self

    @classmethod
    def from_dict(cls, data: dict) -> SessionSpec:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise RunnerError(f"unknown session settings: {', '.join(sorted(unknown))}")
        options = data.get("provider_options") or {}
        if not isinstance(options, dict):
            raise RunnerError(f"provider_options must be a mapping, got {options!r}")
        return cls(
            **{"flush_denormals": False}  # a record from before the setting was timed without
            | {k: v for k, v in data.items() if k != "provider_options"},
            provider_options=tuple(sorted((str(k), str(v)) for k, v in options.items())),
        )

    def session_options(self):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if self.threads:
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
        if self.spinning == "off":
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        elif self.spinning == "stop-after-run":
            options.add_session_config_entry("session.force_spinning_stop", "1")
        if self.flush_denormals:
            # ONNX Runtime sets it on its pool threads and on the thread creating the session
            options.add_session_config_entry("session.set_denormal_as_zero", "1")
        levels = ort.GraphOptimizationLevel
        options.graph_optimization_level = {
            "disabled": levels.ORT_DISABLE_ALL,
            "basic": levels.ORT_ENABLE_BASIC,
            "extended": levels.ORT_ENABLE_EXTENDED,
            "all": levels.ORT_ENABLE_ALL,
        }[self.graph_optimization]
        options.log_severity_level = 3
        return options

    def load(self, path: Path):
        """An InferenceSession for ``path`` built exactly as this spec says."""
        import onnxruntime as ort

        provider = resolve_provider(self.provider)
        providers: list = [(provider, dict(self.provider_options))]
        if provider != "CPUExecutionProvider":
            providers.append("CPUExecutionProvider")
        try:
            return ort.InferenceSession(str(path), self.session_options(), providers=providers)
        except Exception as err:  # ORT raises its own exception types
            raise RunnerError(f"cannot load {path}: {err}") from err


def recorded_session(device: dict) -> SessionSpec:
    """The SessionSpec a profile, predictor or manifest was timed with. Records written
    before specs existed hold provider and threads only, and were timed with spinning
    off."""
    if device.get("session"):
        return SessionSpec.from_dict(device["session"])
    provider = device.get("provider") or "cpu"  # SessionSpec maps the long name to the short
    return SessionSpec(
        provider=provider, threads=device.get("threads"), spinning="off", flush_denormals=False
    )


class OrtBackend:
    """Times real ONNX Runtime sessions built from one SessionSpec; with I/O binding, the
    inputs are copied to the device once per session and outputs stay there."""

    def __init__(self, spec: SessionSpec = SessionSpec()):
        self.spec = spec
        resolve_provider(spec.provider)  # an unavailable provider fails here, with the fix
        self._bound: list[tuple[Any, dict, Any]] = []  # (session, feeds, binding), recent

    def load(self, path: Path):
        return self.spec.load(path)

    def binding(self, session, feeds: dict):
        import onnxruntime as ort

        for s, f, b in self._bound:
            if s is session and f is feeds:
                return b
        device = self.spec.device
        binding = session.io_binding()
        for node in session.get_inputs():
            value = ort.OrtValue.ortvalue_from_numpy(feeds[node.name], device, 0)
            binding.bind_ortvalue_input(node.name, value)
        for node in session.get_outputs():
            binding.bind_output(node.name, device)
        # a few recent bindings: the model and the reference alternate; older sessions
        # are released with their bindings
        self._bound = [*self._bound[-3:], (session, feeds, binding)]
        return binding

    def time_one(self, session, feeds: dict) -> float:
        if self.spec.io_binding:
            binding = self.binding(session, feeds)
            start = time.perf_counter()
            session.run_with_iobinding(binding)
            binding.synchronize_outputs()  # a GPU run is asynchronous until here
            return (time.perf_counter() - start) * 1e3
        start = time.perf_counter()
        session.run(None, feeds)
        return (time.perf_counter() - start) * 1e3


def median_interval(values, level: float = 0.95) -> tuple[float, float]:
    """A distribution-free interval for the median of ``values`` (order statistics:
    the k-th smallest and largest, k the largest rank the binomial tail allows at
    ``level``; below 6 values it is the range). A round slowed by another tenant moves
    it by one rank, not by its size."""
    v = np.sort(np.asarray(values, dtype=float))
    n = v.size
    tail, k, cdf, term = (1 - level) / 2, 0, 0.0, 0.5**n
    for i in range(n):  # cdf = P(Binomial(n, 1/2) <= i)
        cdf += term
        if cdf > tail:
            break
        k = i + 1
        term *= (n - i) / (i + 1)
    k = max(k, 1)
    return float(v[k - 1]), float(v[n - k])


@dataclass(frozen=True)
class Latency:
    """One measured latency in milliseconds (nn-Meter's ``Latency``): the median and its
    spread over ``runs`` timed runs in ``rounds`` rounds; timed beside a reference, also
    the reference's median, the ratio (the median of the rounds' ratios) and its 95%
    interval. ``spread`` is the interval's width over its median (the ratio's, or the
    latency's without a reference). ``to_dict`` is the measurements-file row; the raw
    samples ride along for callers that pool them (ship's ship-wide reference)."""

    median_ms: float
    p90_ms: float
    cv: float
    runs: int
    ref_ms: float | None = None
    rel: float | None = None
    rel_lo: float | None = None
    rel_hi: float | None = None
    rounds: int | None = None
    spread: float | None = None
    samples: tuple[float, ...] = field(default=(), repr=False, compare=False)
    ref_samples: tuple[float, ...] = field(default=(), repr=False, compare=False)

    @classmethod
    def from_samples(cls, samples, refs=None, chunk: int | None = None) -> Latency:
        """``chunk``: runs per round (None: one round of everything)."""
        a = np.asarray(samples, dtype=float)
        if a.size == 0:
            raise ValueError("no timing samples")
        r = np.asarray(refs if refs is not None else [], dtype=float)
        paired = r.size == a.size
        step = chunk or a.size
        per_round = [
            float(np.median(a[i : i + step] / r[i : i + step]))
            if paired
            else float(np.median(a[i : i + step]))
            for i in range(0, a.size, step)
        ]
        centre = float(np.median(per_round))
        lo, hi = median_interval(per_round)
        extra = {}
        if paired:
            extra = {"ref_ms": float(np.median(r)), "rel": centre, "rel_lo": lo, "rel_hi": hi}
        return cls(
            median_ms=float(np.median(a)),
            p90_ms=float(np.percentile(a, 90)),
            cv=float(a.std(ddof=1) / a.mean()) if a.size > 1 and a.mean() > 0 else 0.0,
            runs=int(a.size),
            rounds=len(per_round),
            spread=(hi - lo) / centre if centre > 0 else 0.0,
            samples=tuple(a.tolist()),
            ref_samples=tuple(r.tolist()) if paired else (),
            **extra,
        )

    def to_dict(self) -> dict[str, float | int]:
        skip = ("samples", "ref_samples")
        return {k: v for k, v in asdict(self).items() if v is not None and k not in skip}


def measure(
    backend,
    handle,
    feeds: dict,
    protocol: Protocol,
    reference=None,
    settled: Callable[[Latency], bool] | None = None,
) -> Latency:
    """Warm up, then time in interleaved rounds until the median is known to within
    ``protocol.max_spread`` (or a cap is hit).

    With ``reference``, each timed run of the model is followed by one of the reference,
    and each round's ratio is the median of its paired ratios: a shared machine changes
    speed within seconds (medians of one model moved 4.1 to 7.1 ms here), and pairing
    cancels that; the rounds' spread shows what pairing did not cancel. ``settled``: a
    decision resting on the measurement (a budget); while it says no, rounds go on, up
    to ``protocol.decide_runs``. Garbage is collected before and the collector paused
    during timing (as timeit does): a collection of the exporter's garbage inside a
    timed run adds milliseconds."""
    gc.collect()
    gc.disable()
    try:
        for _ in range(protocol.warmup):
            backend.time_one(handle, feeds)
            if reference is not None:
                backend.time_one(reference, feeds)
        samples: list[float] = []
        refs: list[float] = []
        started = time.monotonic()
        while True:
            for _ in range(protocol.chunk):
                samples.append(backend.time_one(handle, feeds))
                if reference is not None:
                    refs.append(backend.time_one(reference, feeds))
            if len(samples) < protocol.min_runs:
                continue
            stats = Latency.from_samples(samples, refs or None, protocol.chunk)
            narrow = stats.spread <= protocol.max_spread
            decided = settled is None or settled(stats)
            if narrow and decided:
                break
            timed_out = time.monotonic() - started > protocol.max_seconds
            cap = protocol.max_runs if decided else max(protocol.decide_runs, protocol.max_runs)
            if len(samples) >= cap or (timed_out and decided):
                break
            if timed_out and len(samples) >= protocol.max_runs:
                break  # undecided, but out of time: the caller records it as unclear
    finally:
        gc.enable()
    return Latency.from_samples(samples, refs or None, protocol.chunk)


# ---- the append-only measurements file ------------------------------------------------

# Each row carries a checksum of its own content, so a hand edit (a changed median, a
# changed fitness) is found and named instead of silently changing a result. A row
# without one is refused like an edited row: deleting the checksum must not be a way
# around it (every file written since checksums exist has them on every row).
CHECKSUM_KEY = "sum"
ROW_KINDS = ("model", "reference")

# Why a row cannot be used, or None: the content check a log's reader applies to each
# intact row (profile_store adds the fields a predictor needs).
RowCheck = Callable[[dict], str | None]


def row_sum(row: dict) -> str:
    body = {k: v for k, v in row.items() if k != CHECKSUM_KEY}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def sealed_line(row: dict) -> bytes:
    """One JSON line holding the row and its checksum."""
    return (json.dumps({**row, CHECKSUM_KEY: row_sum(row)}, sort_keys=True) + "\n").encode()


def parse_row(line: bytes) -> tuple[dict | None, str | None]:
    """(row without its checksum, None), or (None, why it cannot be trusted)."""
    try:
        row = json.loads(line)
    except ValueError:
        return None, "is not valid JSON"
    if not isinstance(row, dict):
        return None, "is not a row"
    stored = row.pop(CHECKSUM_KEY, None)
    if stored is None:
        return None, "has no checksum (edited by hand, or not written by yoco-deploy)"
    if stored != row_sum(row):
        return None, "was edited after it was written (checksum mismatch)"
    return row, None


def measurement_problem(row: dict) -> str | None:
    """What every reader of a measurements file needs of a row: its kind and its key."""
    if row.get("kind") not in ROW_KINDS:
        return f"is not a measurement (kind {row.get('kind')!r}, not model or reference)"
    if not isinstance(row.get("key"), str):
        return "has no key"
    return None


def checked_rows(data: bytes, check: RowCheck):
    """(line number, line, row or None, why it is unusable or None) for each non-blank
    line; a last line without its newline is named as cut off."""
    lines = data.split(b"\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        row, why = parse_row(line)
        if row is None and number == len(lines) and not data.endswith(b"\n"):
            why = "is cut off (an interrupted write?)"
        elif row is not None:
            why = check(row)
        yield number, line, (row if why is None else None), why


def set_aside(path: Path, check: RowCheck) -> list[str]:
    """Keep every intact row that ``check`` accepts; move the others to
    ``<file>.rejected``, keep a backup of the file as it was, and return what was moved
    ("line N why" each)."""
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    good, bad, dropped = [], [], []
    for number, line, row, why in checked_rows(data, check):
        if row is not None:
            good.append(line)
        else:
            bad.append(line)
            dropped.append(f"line {number} {why}")
    if bad:
        backup = path.with_name(path.name + f".bak-{int(time.time())}")
        backup.write_bytes(data)
        with open(path.with_name(path.name + ".rejected"), "ab") as f:
            f.write(b"\n".join(bad) + b"\n")
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(b"".join(line + b"\n" for line in good))
        os.replace(tmp, path)
    return dropped


def repair_note(path: Path, dropped: list[str]) -> str:
    """One line saying what --repair set aside, and where it went."""
    if not dropped:
        return f"{path}: every row is intact, nothing set aside"
    shown = "; ".join(dropped[:5]) + (f"; and {len(dropped) - 5} more" if len(dropped) > 5 else "")
    rows = "1 row" if len(dropped) == 1 else f"{len(dropped)} rows"
    return (
        f"{path}: set {rows} aside ({shown}) into {Path(path).name}.rejected; the file as "
        "it was is kept as a .bak"
    )


def append_line(path: Path, line: bytes) -> None:
    """Append one whole line or nothing: a short write is continued, and a failed one (a
    full disk) cuts the file back to its length before, so no torn row is left behind."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        try:
            done = 0
            while done < len(line):
                n = os.write(fd, line[done:])
                if n <= 0:
                    raise OSError(5, "the disk accepted no more bytes")
                done += n
            os.fsync(fd)
        except OSError as err:
            raise RunnerError(_append_failed(fd, size, path, err)) from None
    finally:
        os.close(fd)


def _append_failed(fd: int, size: int, path: Path, err: OSError) -> str:
    try:
        os.ftruncate(fd, size)
        left = "the file is as it was before this row"
    except OSError:
        left = "a torn last row may remain: rerun with --repair to set it aside"
    return (
        f"cannot append a row to {path}: {err.strerror or err}; {left}. Free disk space "
        "(or fix the disk) and run the same command again: it resumes"
    )


class MeasurementLog:
    """JSON lines, appended and fsynced one row at a time; never rewritten. With
    ``repair``, unusable rows are set aside first (``set_aside`` lists them)."""

    def __init__(self, path: Path, repair: bool = False, check: RowCheck = measurement_problem):
        self.path = Path(path)
        self.check = check
        self.set_aside = set_aside(self.path, check) if repair else []
        self.rows = self._read()

    def _read(self) -> list[dict]:
        if not self.path.exists():
            return []
        rows = []
        for number, _, row, why in checked_rows(self.path.read_bytes(), self.check):
            if row is None:
                raise RunnerError(
                    f"{self.path}: line {number} {why}; nothing was changed. Run the command "
                    "again with --repair to set such lines aside (every intact row is kept, "
                    "and a backup), or move the file away"
                )
            rows.append(row)
        return rows

    @staticmethod
    def repair(path: Path) -> int:
        """Move unreadable, edited or unsummed lines to ``<file>.rejected``; keep a
        backup; return the count. Every intact row stays."""
        return len(set_aside(path, measurement_problem))

    def append(self, row: dict) -> None:
        append_line(self.path, sealed_line(row))  # one write per row: whole rows only
        self.rows.append(row)

    def latest(self, kind: str = "model") -> dict[str, dict]:
        """The last row per job key: re-measurements supersede earlier rows."""
        out = {}
        for row in self.rows:
            if row["kind"] == kind:
                out[row["key"]] = row
        return out


# ---- the device ---------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.split(":")[0].strip() in ("model name", "Model", "Hardware"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def host_fingerprint() -> dict:
    """The machine a timing depends on: CPU, cores, OS, Python, onnxruntime."""
    import onnxruntime as ort

    return {
        "cpu": cpu_model(),
        "machine": platform.machine(),
        "logical_cores": os.cpu_count(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
    }


def device_fingerprint(spec: SessionSpec) -> dict:
    return {
        **host_fingerprint(),
        "provider": spec.provider_name,
        "threads": spec.threads,
        "session": spec.to_dict(),
    }


# ---- the measurement loop -------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    arch_id: str
    batch: int
    seq_len: int
    arch: dict | None = None

    @property
    def key(self) -> str:
        return job_key(self.arch_id, self.batch, self.seq_len)


def _print_progress(done: int, total: int, eta_s: float | None, key: str) -> None:
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
    progress: Callable[[int, int, float | None, str], None] = _print_progress,
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
