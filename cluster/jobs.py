"""`actionllm submit` / `actionllm jobs`: any `actionllm` command as a Ray job on a cluster (Ray's
JobSubmissionClient), with a runtime_env that ships this project.

The job's entrypoint is `python -m cli <command> ...` (the `actionllm` command's package), run by the cluster's Python in the shipped
working directory, so the code that runs is the code you submitted. Token authentication (on by default in
Ray 2.60): the token is read from RAY_AUTH_TOKEN, else the file named by RAY_AUTH_TOKEN_PATH, else
~/.ray/auth_token, and sent as `Authorization: Bearer <token>` with every request. A missing or wrong token
becomes a `ClusterError` that says which, and where the token was looked for.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .local import read_state

TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
# never shipped: environments, data, run folders, caches (Ray also honours the project's .gitignore)
EXCLUDES = [".git", ".venv", "venv", "data", "runs", "**/__pycache__", "*.pyc", "*.egg-info", ".pytest_cache",
            ".ruff_cache", ".hypothesis", "node_modules"]
PATH_FLAGS = ("--data", "--output", "--checkpoint", "--config", "--space", "--report", "--input")


class ClusterError(Exception):
    """A cluster-side refusal or an unreachable cluster, as a message for people (no traceback)."""


@dataclass
class Token:
    value: str | None
    source: str  # where it came from, for messages


def find_token() -> Token:
    """RAY_AUTH_TOKEN, else the file RAY_AUTH_TOKEN_PATH names, else ~/.ray/auth_token (Ray's own order)."""
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return Token(os.environ["RAY_AUTH_TOKEN"].strip(), "RAY_AUTH_TOKEN")
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if path:
        if not Path(path).expanduser().is_file():
            raise ClusterError(f"RAY_AUTH_TOKEN_PATH={path} names no file")
        return Token(Path(path).expanduser().read_text().strip(), f"RAY_AUTH_TOKEN_PATH={path}")
    default = Path.home() / ".ray" / "auth_token"
    if default.is_file():
        return Token(default.read_text().strip(), str(default))
    return Token(None, "none")


def dashboard_address(address: str | None) -> str:
    """--address, else RAY_API_SERVER_ADDRESS / an http RAY_ADDRESS, else the local cluster of `actionllm
    cluster up`."""
    for candidate in (address, os.environ.get("RAY_API_SERVER_ADDRESS"), os.environ.get("RAY_ADDRESS")):
        if candidate and candidate.startswith(("http://", "https://")):
            return candidate.rstrip("/")
        if candidate and candidate is address:
            return f"http://{candidate}".rstrip("/")  # HOST:PORT given without a scheme
    state = read_state()
    if state:
        return state["dashboard"]
    raise ClusterError("no cluster address: pass --address http://HOST:8265 (the Ray dashboard), set "
                       "RAY_API_SERVER_ADDRESS, or start a local cluster with `actionllm cluster up`")


def _auth_message(err: Exception, address: str, token: Token) -> str:
    text = str(getattr(err, "message", err))
    if "Authentication required" in text or "Missing authentication token" in text:
        return (f"the Ray cluster at {address} requires an authentication token and none was sent (looked in "
                "RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH and ~/.ray/auth_token). Put the cluster's token (`ray "
                "get-auth-token` on its head node) in one of them.")
    return (f"the Ray cluster at {address} refused the authentication token from {token.source}: it is not this "
            "cluster's token. Use the token of its head node (`ray get-auth-token` there) in RAY_AUTH_TOKEN or a "
            "file named by RAY_AUTH_TOKEN_PATH.")


@contextmanager
def _cluster_errors(address: str, token: Token):
    from ray.exceptions import AuthenticationError

    try:
        yield
    except AuthenticationError as err:
        raise ClusterError(_auth_message(err, address, token)) from None
    except ConnectionError as err:
        raise ClusterError(f"no Ray dashboard answers at {address} ({err}): is the cluster up, and is this its "
                           "dashboard address (port 8265 by default)?") from None
    except RuntimeError as err:  # the job server's refusals, e.g. an unknown job id (404)
        raise ClusterError(str(err).strip()) from None


class Jobs:
    """A JobSubmissionClient with this project's token handling and error messages."""

    def __init__(self, address: str | None = None):
        from ray.job_submission import JobSubmissionClient

        self.address = dashboard_address(address)
        self.token = find_token()
        headers = {"Authorization": f"Bearer {self.token.value}"} if self.token.value else {}
        with self.errors():
            self.client = JobSubmissionClient(self.address, headers=headers)

    def errors(self):
        return _cluster_errors(self.address, self.token)

    def submit(self, entrypoint: str, runtime_env: dict, num_cpus: float | None = None,
               num_gpus: float | None = None, submission_id: str | None = None) -> str:
        with self.errors():
            return self.client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env, submission_id=submission_id,
                                          entrypoint_num_cpus=num_cpus, entrypoint_num_gpus=num_gpus,
                                          metadata={"submitted_by": "actionllm submit"})

    def list(self) -> list[dict]:
        with self.errors():
            jobs = self.client.list_jobs()
        rows = [_job_row(j) for j in jobs]
        return sorted(rows, key=lambda r: r["start_time"] or 0, reverse=True)

    def status(self, job_id: str) -> dict:
        with self.errors():
            return _job_row(self.client.get_job_info(job_id))

    def logs(self, job_id: str) -> str:
        with self.errors():
            return self.client.get_job_logs(job_id)

    def follow(self, job_id: str, write) -> str:
        """Stream the job's log lines to `write` until it ends; returns its final status."""
        async def tail():
            async for chunk in self.client.tail_job_logs(job_id):
                write(chunk)

        with self.errors():
            try:
                asyncio.run(tail())
            except Exception as err:  # the log stream can drop (head restart); fall back to the status
                write(f"\n[actionllm] log stream ended early: {err}\n")
            return self.client.get_job_status(job_id).value

    def stop(self, job_id: str) -> bool:
        with self.errors():
            return self.client.stop_job(job_id)


def _job_row(info) -> dict:
    status = getattr(info.status, "value", str(info.status))
    start, end = info.start_time, info.end_time
    return {"job_id": info.submission_id or info.job_id, "status": status, "entrypoint": info.entrypoint,
            "message": info.message, "start_time": start, "end_time": end,
            "duration_s": round((end - start) / 1000, 1) if start and end else None}


def project_root(start: Path | None = None) -> Path | None:
    """The ActionLLM checkout containing `start` (a folder with pyproject.toml naming actionllm), if any."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file() and 'name = "actionllm"' in pyproject.read_text():
            return folder
    return None


def installed_modules() -> list[str]:
    """The folders of the installed actionllm, training, services, cli and cluster packages (for `--ship package`)."""
    import importlib.util

    folders = []
    for name in ("actionllm", "training", "services", "cli", "cluster"):
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise ClusterError(f"package {name!r} is not importable here; install the project (pip install -e .)")
        folders.append(str(Path(list(spec.submodule_search_locations)[0]).resolve()))
    return folders


def pinned_requirements(path: Path) -> list[str]:
    """`NAME==VERSION` lines of a requirements/constraints file (comments and options dropped)."""
    if not path.is_file():
        raise ClusterError(f"requirements file {path} does not exist")
    lines = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
    return [line for line in lines if line and not line.startswith("-")]


def runtime_env(ship: str = "workdir", root: Path | None = None, requirements: Path | None = None,
                env_vars: dict[str, str] | None = None) -> dict:
    """The job's runtime_env. ship: `workdir` (the checkout, minus EXCLUDES and .gitignore'd files), `package`
    (the installed actionllm/training/services/cli/cluster as py_modules), or `none` (the cluster's image has it).
    `requirements`: a pinned list (e.g. constraints.txt) installed into the job's own virtualenv by Ray."""
    env: dict = {}
    if ship == "workdir":
        root = root or project_root()
        if root is None:
            raise ClusterError("--ship workdir needs an ActionLLM checkout (run from it, or use --ship package)")
        env["working_dir"] = str(root)
        env["excludes"] = list(EXCLUDES)
    elif ship == "package":
        env["py_modules"] = installed_modules()
    elif ship != "none":
        raise ClusterError(f"--ship must be workdir, package or none, got {ship!r}")
    if requirements is not None:
        env["pip"] = {"packages": pinned_requirements(Path(requirements)), "pip_check": False}
    env["env_vars"] = {"PYTHONUNBUFFERED": "1", **(env_vars or {})}
    return env


def entrypoint(args: list[str]) -> str:
    """`python -m cli ARGS` (the shipped code first on sys.path), quoted for the job's shell."""
    if not args:
        raise ClusterError("nothing to run: give an actionllm command after --, e.g. `actionllm submit -- train "
                           "--config actionllm/methods/joints_llm/configs/demo.yaml --data s3://bucket/shards --output s3://bucket/run`")
    if args[0] in ("actionllm", "python"):
        raise ClusterError(f"give the actionllm command itself after -- (e.g. `-- train ...`), not {args[0]!r}")
    return shlex.join(["python", "-m", "cli", *args])


def path_warnings(args: list[str], root: Path | None) -> list[str]:
    """Paths the job cannot see: relative data/ or runs/ paths (not shipped) and relative outputs (written
    inside the job's temporary working directory and lost with it)."""
    warnings = []
    for flag, value in zip(args, args[1:], strict=False):
        if flag not in PATH_FLAGS or "://" in value or os.path.isabs(value):
            continue
        first = Path(value).parts[0] if Path(value).parts else ""
        if flag in ("--output", "--report"):
            warnings.append(f"{flag} {value} is relative: the job writes it inside its temporary working directory "
                            "on the cluster; use s3://, gs:// or an absolute path on shared storage")
        elif first in ("data", "runs") or (root is not None and not (root / value).exists()):
            warnings.append(f"{flag} {value} is not shipped with the job (data/ and runs/ never are): use s3://, "
                            "gs:// or an absolute path every node can read")
    return warnings


def describe(env: dict) -> str:
    shipped = env.get("working_dir") or ", ".join(env.get("py_modules", [])) or "nothing (the image's install)"
    extra = f" + {len(env['pip']['packages'])} pinned requirements" if "pip" in env else ""
    return f"{shipped}{extra}"


def dumps(obj) -> str:
    return json.dumps(obj, indent=2, default=str)
