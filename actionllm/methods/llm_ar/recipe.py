"""Registers `llm-ar` (LLM-AR, seed 002_ea06583b87a6e65c.txt): two stages, the action VQ-VAE then the LoRA LLM."""

from ...registry import Recipe, register_recipe
from .config import LLMARConfig
from .model import LLMARRecognizer, VQVAERecognizer

RECIPE = register_recipe(Recipe(
    name="llm-ar",
    description="LLM-AR: action VQ-VAE (hyperbolic codebook, Zipf/context/MMD losses) -> action sentence -> "
                "LoRA LLM names the action (classes scored by name log-likelihood)",
    config_cls=LLMARConfig,
    recognizer=LLMARRecognizer,
    stages=("vqvae", "llm"),
    stage_recognizers={"vqvae": VQVAERecognizer},
    stage_input="vqvae_folder",
    # sec. 4.2: VQ-VAE AdamW lr 2e-4; LoRA AdamW lr 3e-3 (micro-batches of 4)
    stage_defaults={"vqvae": {"lr": 2e-4, "batch_size": 32, "epochs": 30, "eval_every": 5},
                    "llm": {"lr": 3e-3, "batch_size": 4, "epochs": 3}},
    search_space={"clip.frames": {"choice": [16, 32]}, "rank": {"choice": [16, 64]},
                  "lr": {"loguniform": [1e-4, 3e-3]}},
    knobs={"window": "clip.window", "stride": "clip.stride", "frames": "clip.frames", "rank": "lora.r",
           "alpha": "lora.alpha", "backbone": "backbone.name_or_path", "gguf_file": "backbone.gguf_file",
           "prompt": "prompt", "codebook_size": "vqvae.codebook_size", "hyperbolic": "vqvae.hyperbolic"},
))
