"""The Ray layer for learning: data pipelines, training, tuning, jobs. Imports actionllm, never services."""
