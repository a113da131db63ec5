"""Non-LLM baselines trained through the same registry, loop and evaluation (the field's yardsticks)."""
