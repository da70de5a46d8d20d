"""How a model is run: the one definition of an ONNX Runtime session (provider, threads,
spinning, graph optimization, denormals, I/O binding) and a backend that times runs of
sessions built from it."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from yoco_deploy.runtime.errors import RunnerError

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
