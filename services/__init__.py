"""The Ray Serve layer. Imports actionllm, never training."""
