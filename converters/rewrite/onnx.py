"""ONNX rewrites (ModelProto -> ModelProto)."""
