"""SUGAR (seed 001, AAAI 2026): a skeleton encoder taught by motion/visual knowledge text. See README.md."""
