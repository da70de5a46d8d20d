"""The machine a timing depends on, recorded with every profile, predictor and manifest."""

from __future__ import annotations

import os
import platform

from yoco_deploy.runtime.session import SessionSpec


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
