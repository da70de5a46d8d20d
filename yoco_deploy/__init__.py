"""yoco-deploy: compress a BERT classifier once, ship latency-budgeted ONNX sub-BERTs."""

__version__ = "0.1.0"


def load_bundle(path):
    """Open a shipped bundle for classification (onnxruntime and tokenizers only):
    ``load_bundle(dir).classify(["a gripping film"])``. See ``yoco_deploy.bundle``."""
    from yoco_deploy.bundle import load_bundle as load

    return load(path)
