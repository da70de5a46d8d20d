"""From a dense sub-BERT to validated ONNX: export, fusion and quantization, metadata."""
