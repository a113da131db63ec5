"""Run the `actionllm` console script the way a user does."""

import os
import subprocess
import sys
from pathlib import Path

ACTIONLLM = str(Path(sys.executable).with_name("actionllm"))
ENV = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}


def run(*args, check=True, timeout=300):
    proc = subprocess.run([ACTIONLLM, *map(str, args)], capture_output=True, text=True, env=ENV, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"actionllm {' '.join(map(str, args))} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc
