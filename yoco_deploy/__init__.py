"""yoco-deploy: compress a BERT classifier once, ship latency-budgeted ONNX sub-BERTs."""

__version__ = "0.1.0"
