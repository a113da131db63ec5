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


def start(*args) -> subprocess.Popen:
    """`actionllm ARGS` in its own process group, for a test that kills the whole job (driver and the local Ray it
    started) the way a lost machine does."""
    return subprocess.Popen([ACTIONLLM, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=ENV, start_new_session=True, preexec_fn=terminal_sigint)


def terminal_sigint() -> None:
    """In the child: Ctrl-C as a command typed in a terminal gets it (default action, not blocked). A child inherits
    an ignored or blocked SIGINT from this process, and a suite started as a shell's background job (as a CI
    harness may start it) runs with SIGINT ignored: a Ctrl-C test would then test that, not the command."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def kill_job_when(proc: subprocess.Popen, ready, timeout: float = 600, what: str = "the moment to kill",
                  sig: int | None = None) -> str:
    """Send `sig` (SIGKILL: the machine is gone; SIGINT: Ctrl-C in its terminal) to `proc`'s whole process group
    as soon as `ready()` is true (polled every 0.2 s); returns what it printed on stderr."""
    import signal
    import time

    sig = signal.SIGKILL if sig is None else sig

    deadline = time.time() + timeout
    while not ready():
        if proc.poll() is not None:
            raise AssertionError(f"the job ended before {what}:\n{proc.communicate()[1][-3000:]}")
        if time.time() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError(f"{what} did not come within {timeout} s")
        time.sleep(0.2)
    os.killpg(proc.pid, sig)
    try:
        return proc.communicate(timeout=120)[1]
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError(f"the job did not end within 120 s of signal {sig}") from None
