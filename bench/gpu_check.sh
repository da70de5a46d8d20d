#!/usr/bin/env bash
# The prepared GPU check (issue [3/5]): at most about 8 minutes on one H100, offline.
# Installs only what the machine lacks, from wheels in shared/wheels when present
# (never onnxruntime-gpu: its wheel is too large to bring), then runs bench/gpu_check.py.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-bench/results}"
python - <<'PY' || true
import importlib.util
need = ["torch", "transformers", "accelerate", "onnx", "onnxruntime", "tokenizers", "pydantic",
        "typer", "rich", "yaml", "safetensors", "sklearn", "scipy", "matplotlib"]
missing = [m for m in need if importlib.util.find_spec(m) is None]
print("missing:", " ".join(missing) or "nothing")
PY
if ls shared/wheels/*.whl >/dev/null 2>&1; then
  python -m pip install -q --no-index --find-links shared/wheels --no-deps shared/wheels/*.whl || true
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
# the package is not installed there: import it from the working tree
PYTHONPATH=. timeout 480 python bench/gpu_check.py --out "$OUT/gpu_check.json"
