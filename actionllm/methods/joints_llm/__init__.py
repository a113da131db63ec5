"""Action-JointsLLM (seed 000): Joint2Text -> LoRA LLM -> attn-pooling + MLP classifier. See README.md."""
