"""ActionLLM: LLM-based skeleton action recognizers (the science; never imports ray)."""

__version__ = "0.1.0"
