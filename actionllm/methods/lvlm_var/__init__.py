"""LVLM-VAR (seed 003): video -> frozen visual encoder -> VST semantic tokens -> LoRA LLM that names and explains the action."""
