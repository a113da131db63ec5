"""`python -m actionllm ...` = the `actionllm` command (what a submitted Ray job runs on the cluster)."""

from actionllm.cli import main

if __name__ == "__main__":
    main()
