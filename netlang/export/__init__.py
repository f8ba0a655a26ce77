"""Model export to other formats (ONNX): an IR network and its parameters in, a file out."""
