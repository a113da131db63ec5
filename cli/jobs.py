"""Cluster commands: a local head (cluster up|down|status), Ray jobs (submit, jobs list|status|logs|stop)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.table import Table

from .common import app, console, fail, out

cluster_app = typer.Typer(no_args_is_help=True, help="A local Ray head on this machine (token auth, loopback "
                          "dashboard) for `actionllm submit`.")
jobs_app = typer.Typer(no_args_is_help=True, help="Ray jobs on a cluster: list, status, logs, stop.")
app.add_typer(cluster_app, name="cluster")
app.add_typer(jobs_app, name="jobs")
ADDRESS_HELP = ("the cluster's Ray dashboard, http://HOST:8265 (default: RAY_API_SERVER_ADDRESS, else the local "
                "cluster of `actionllm cluster up`)")


@cluster_app.command("up")
def cluster_up(
    port: int = typer.Option(6379, help="GCS port of the head"),
    dashboard_port: int = typer.Option(8265, help="dashboard + Jobs API port (bound to 127.0.0.1)"),
    num_cpus: int = typer.Option(None, min=1, help="logical CPUs (default: the machine's)"),
    num_gpus: int = typer.Option(None, min=0, help="GPUs (default: detected)"),
    temp_dir: str = typer.Option(None, help="Ray's temp dir, short (default /tmp/actionllm-ray-UID)"),
    metrics_export_port: int = typer.Option(None, help="Prometheus metrics port of the head (default: a free one)"),
) -> None:
    """Start a real Ray head on 127.0.0.1 with token authentication on; `actionllm submit` then finds it."""
    from cluster.local import up

    try:
        state = up(port=port, dashboard_port=dashboard_port, num_cpus=num_cpus, num_gpus=num_gpus, temp_dir=temp_dir,
                   metrics_export_port=metrics_export_port, say=lambda m: console.print(m, highlight=False))
    except (RuntimeError, ValueError, FileNotFoundError) as err:
        fail(str(err))
    console.print(f"Ray head up: dashboard {state['dashboard']} (token: {state['token']}), metrics {state['metrics']}"
                  f"\n  submit: actionllm submit -- train --config actionllm/methods/joints_llm/configs/demo.yaml --data $PWD/data/demo/"
                  f"shards --output $PWD/runs/demo\n  stop:   actionllm cluster down", highlight=False)
    out.print_json(data=state)


@cluster_app.command("down")
def cluster_down() -> None:
    """Stop the head `cluster up` started (only its processes; other Ray instances keep running)."""
    from cluster.local import down

    if down(say=lambda m: console.print(m, highlight=False)) == 0:
        console.print("no local cluster was running", highlight=False)


@cluster_app.command("status")
def cluster_status() -> None:
    """The local cluster's addresses and whether its processes are running."""
    from cluster.local import status

    state = status()
    if state is None:
        fail("no local cluster (start one: actionllm cluster up)", code=1)
    out.print_json(data=state)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def submit(
    ctx: typer.Context,
    address: str = typer.Option(None, help=ADDRESS_HELP),
    ship: str = typer.Option("workdir", help="workdir: this checkout (minus data/, runs/, .venv, .gitignore'd files) | "
                             "package: the installed actionllm/training/services/cli/cluster | none: the cluster's image has it"),
    requirements: Path = typer.Option(None, help="pinned requirements for the job's own virtualenv, e.g. "
                                      "constraints.txt (default: the cluster's environment)"),
    env: list[str] = typer.Option([], "--env", "-e", help="KEY=VALUE for the job's environment (repeatable)"),
    num_cpus: float = typer.Option(None, min=0, help="CPUs reserved for the job's driver"),
    num_gpus: float = typer.Option(None, min=0, help="GPUs reserved for the job's driver"),
    job_id: str = typer.Option(None, help="submission id (default: Ray makes one)"),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="follow the logs until the job ends (exit 0 only if "
                              "it succeeded)"),
) -> None:
    """Run any actionllm command as a Ray job on a cluster: `actionllm submit [OPTIONS] -- train --config ...`.

    The job runs `python -m cli <command>` in the shipped working directory. Data and outputs must be
    where the cluster can reach them: s3://, gs:// or absolute paths on shared storage. Token auth: RAY_AUTH_TOKEN,
    RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token.
    """
    from cluster import jobs

    args = list(ctx.args)
    try:
        env_vars = dict(kv.split("=", 1) for kv in env)
    except ValueError:
        fail(f"--env takes KEY=VALUE, got {env}")
    try:
        command = jobs.entrypoint(args)
        root = jobs.project_root() if ship == "workdir" else None
        renv = jobs.runtime_env(ship, root=root, requirements=requirements, env_vars=env_vars)
        for warning in jobs.path_warnings(args, root):
            console.print(f"[yellow]warning:[/] {warning}", highlight=False)
        client = jobs.Jobs(address)
        jid = client.submit(command, renv, num_cpus=num_cpus, num_gpus=num_gpus, submission_id=job_id)
        console.print(f"submitted {jid} to {client.address}: {command}\n  shipped: {jobs.describe(renv)}\n  follow: "
                      f"actionllm jobs logs {jid} --follow   stop: actionllm jobs stop {jid}", highlight=False)
        if not wait:
            out.print(jid, highlight=False)
            return
        status = client.follow(jid, lambda chunk: (sys.stdout.write(chunk), sys.stdout.flush()))
    except jobs.ClusterError as err:
        fail(str(err))
    console.print(f"job {jid}: {status}", highlight=False)
    raise typer.Exit(0 if status == "SUCCEEDED" else 1)


@jobs_app.command("list")
def jobs_list(address: str = typer.Option(None, help=ADDRESS_HELP)) -> None:
    """The cluster's jobs, newest first."""
    from cluster.jobs import ClusterError, Jobs

    try:
        rows = Jobs(address).list()
    except ClusterError as err:
        fail(str(err))
    table = Table("job id", "status", "duration s", "entrypoint", title="jobs")
    for r in rows:
        table.add_row(r["job_id"], r["status"], "" if r["duration_s"] is None else str(r["duration_s"]),
                      r["entrypoint"][:100])
    out.print(table)


@jobs_app.command("status")
def jobs_status(job_id: str = typer.Argument(...), address: str = typer.Option(None, help=ADDRESS_HELP)) -> None:
    """One job's status, message, times and entrypoint (JSON)."""
    from cluster.jobs import ClusterError, Jobs

    try:
        out.print_json(data=Jobs(address).status(job_id))
    except ClusterError as err:
        fail(str(err))


@jobs_app.command("logs")
def jobs_logs(job_id: str = typer.Argument(...), address: str = typer.Option(None, help=ADDRESS_HELP),
              follow: bool = typer.Option(False, "--follow", "-f", help="stream until the job ends")) -> None:
    """A job's driver output (what `actionllm <command>` printed on the cluster)."""
    from cluster.jobs import ClusterError, Jobs

    try:
        jobs = Jobs(address)
        if follow:
            jobs.follow(job_id, lambda chunk: (sys.stdout.write(chunk), sys.stdout.flush()))
        else:
            sys.stdout.write(jobs.logs(job_id))
    except ClusterError as err:
        fail(str(err))


@jobs_app.command("stop")
def jobs_stop(job_id: str = typer.Argument(...), address: str = typer.Option(None, help=ADDRESS_HELP)) -> None:
    """Ask the cluster to stop a job (SIGTERM to its driver, then SIGKILL)."""
    from cluster.jobs import ClusterError, Jobs

    try:
        stopped = Jobs(address).stop(job_id)
    except ClusterError as err:
        fail(str(err))
    console.print(f"job {job_id}: {'stopping' if stopped else 'already finished'}", highlight=False)
