"""`python -m cli ...` = the `actionllm` command (what a submitted Ray job runs on the cluster)."""

from cli import main

main()
