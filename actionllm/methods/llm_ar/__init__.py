"""Action-LLM-AR (seed 002): action VQ-VAE with a hyperbolic codebook -> LoRA LLM that names the action. See README.md."""
