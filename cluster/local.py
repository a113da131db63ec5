"""`actionllm cluster up|down|status`: a real Ray head on this machine, for `actionllm submit`.

`up` runs `ray start --head` with token authentication on (RAY_AUTH_MODE=token), the dashboard (and with it
the Jobs API) and the Ray client server bound to 127.0.0.1 (head_command), its own temp dir (so `ray.init()`
elsewhere on the machine never finds it) and the Python environment of this command first on PATH (the jobs'
`python -m cli` is this one). Ray would rewrite a loopback node address to the machine's address (and bind the
client server, GCS and raylet there); RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 keeps it on 127.0.0.1, so no other
node can join this head: it is a one-machine cluster. `down` stops exactly this head's processes (found by its temp dir and GCS address,
plus their children), never other Ray instances on the machine as `ray stop` would.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

STATE_ENV = "ACTIONLLM_CLUSTER_STATE"


def state_file() -> Path:
    return Path(os.environ.get(STATE_ENV) or Path.home() / ".actionllm" / "cluster.json")


def read_state() -> dict | None:
    path = state_file()
    return json.loads(path.read_text()) if path.is_file() else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_token() -> str:
    """Where the head reads its token: RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token (created with
    a fresh 256-bit token, mode 600, when none exists). Returns a description for the user."""
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return "RAY_AUTH_TOKEN"
    if os.environ.get("RAY_AUTH_TOKEN_PATH"):
        path = Path(os.environ["RAY_AUTH_TOKEN_PATH"]).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"RAY_AUTH_TOKEN_PATH={path} names no file")
        return str(path)
    path = Path.home() / ".ray" / "auth_token"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
        return f"{path} (new)"
    return str(path)


def _dashboard_up(url: str, timeout: float) -> bool:
    import urllib.error
    import urllib.request

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/api/version", timeout=5):
                return True
        except urllib.error.HTTPError:
            return True  # it answers (401 without a token): up
        except OSError:
            time.sleep(0.5)
    return False


def head_command(port: int, dashboard_port: int, temp: Path, metrics_export_port: int, num_cpus: int | None = None,
                 num_gpus: int | None = None) -> tuple[list[str], dict]:
    """The `ray start --head` command line and its environment. Everything a client connects to listens on
    127.0.0.1 only: the dashboard (Jobs API) by --dashboard-host, and the Ray client server, GCS and raylet by the
    node address, which `ray start` would rewrite from 127.0.0.1 to the machine's address unless
    RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (Ray's switch for single-machine clusters) keeps it on the loopback."""
    bindir = str(Path(sys.executable).parent)
    env = {**os.environ, "RAY_AUTH_MODE": "token", "PATH": bindir + os.pathsep + os.environ.get("PATH", ""),
           "RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
           # Ray's State API clients inside the head's workers (e.g. Train's PlacementGroupCleaner) otherwise find
           # the cluster by scanning for GCS processes, and give up when another Ray runs on the machine
           "RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{dashboard_port}"}
    cmd = [str(Path(bindir) / "ray"), "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
           "--include-dashboard", "true", "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard_port),
           "--temp-dir", str(temp), "--metrics-export-port", str(metrics_export_port),
           "--ray-client-server-port", str(free_port()), "--dashboard-agent-listen-port", str(free_port()),
           "--disable-usage-stats"]
    if num_cpus is not None:
        cmd += ["--num-cpus", str(num_cpus)]
    if num_gpus is not None:
        cmd += ["--num-gpus", str(num_gpus)]
    return cmd, env


def up(port: int = 6379, dashboard_port: int = 8265, num_cpus: int | None = None, num_gpus: int | None = None,
       temp_dir: str | None = None, metrics_export_port: int | None = None, say=print) -> dict:
    """Start the head; write the state file; return the state (dashboard URL, GCS address, temp dir, ports)."""
    state = read_state()
    if state and _alive(state):
        raise RuntimeError(f"a local cluster is already up at {state['dashboard']} (stop it: actionllm cluster down)")
    temp = Path(temp_dir or Path("/tmp") / f"actionllm-ray-{os.getuid()}").resolve()
    if len(str(temp)) > 40:  # Ray's unix socket paths (temp/session_<date>_<pid>/sockets/plasma_store) max out at 107
        raise ValueError(f"--temp-dir {temp} is too long for Ray's socket paths: use a short one such as /tmp/alr")
    temp.mkdir(parents=True, exist_ok=True)
    token_source = ensure_token()
    metrics_export_port = metrics_export_port or free_port()
    cmd, env = head_command(port, dashboard_port, temp, metrics_export_port, num_cpus, num_gpus)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    if proc.returncode != 0:
        raise RuntimeError(f"ray start failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    gcs = (temp / "ray_current_cluster").read_text().strip()
    state = {"dashboard": f"http://127.0.0.1:{dashboard_port}", "gcs_address": gcs, "temp_dir": str(temp),
             "metrics": f"http://127.0.0.1:{metrics_export_port}/metrics", "token": token_source,
             "python": sys.executable, "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    path = state_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(state, indent=2) + "\n")
    if not _dashboard_up(state["dashboard"], 60):
        down(say=say)
        raise RuntimeError(f"the dashboard did not answer at {state['dashboard']} within 60 s; logs: {temp}/session_latest/logs")
    return state


def _processes(state: dict) -> list:
    """This head's processes: those naming its temp dir or GCS address on their command line, and their children."""
    import psutil

    marks = (state["temp_dir"], f"--address={state['gcs_address']}", f"--gcs-address={state['gcs_address']}",
             f"--gcs_server_address={state['gcs_address']}")
    roots = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            line = " ".join(p.info["cmdline"] or [])
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if p.pid != os.getpid() and any(m in line for m in marks):
            roots.append(p)
    found = {p.pid: p for p in roots}
    for p in roots:
        try:
            found.update({c.pid: c for c in p.children(recursive=True)})
        except psutil.NoSuchProcess:
            pass
    return list(found.values())


def _alive(state: dict) -> bool:
    return bool(_processes(state))


def _wait_gone(procs: list, timeout: float) -> list:
    """Wait until every process has exited (a zombie waiting for init to reap it counts as exited); returns
    those still running at the timeout."""
    import psutil

    def running(p) -> bool:
        try:
            return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    deadline = time.time() + timeout
    alive = [p for p in procs if running(p)]
    while alive and time.time() < deadline:
        time.sleep(0.2)
        alive = [p for p in alive if running(p)]
    return alive


def down(grace_s: float = 5.0, say=print) -> int:
    """SIGTERM this head's processes, SIGKILL what is left after `grace_s`; remove the state file. Returns how
    many processes were stopped (0 when none was running)."""
    import psutil

    state = read_state()
    if state is None:
        return 0
    procs = _processes(state)
    for p in procs:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    alive = _wait_gone(procs, grace_s)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    _wait_gone(alive, 5)
    state_file().unlink(missing_ok=True)
    say(f"stopped {len(procs)} Ray processes of the head at {state['dashboard']} (logs kept in {state['temp_dir']})")
    return len(procs)


def status() -> dict | None:
    state = read_state()
    if state is None:
        return None
    return {**state, "running": _alive(state)}
