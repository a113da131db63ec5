"""What every command module shares: the Typer app, the consoles, one-line failures, KEY=VALUE options."""

from __future__ import annotations

import json

import typer
from rich.console import Console

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="rich",
                  help="ActionLLM: LLM-based skeleton action recognition, trained and served on Ray.")
console = Console(stderr=True, soft_wrap=True)  # long lines (paths, epoch lines) are never cut in two
out = Console()


def parse_option(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise typer.BadParameter(f"reader option {text!r} must look like KEY=VALUE")
    key, value = text.split("=", 1)
    try:
        return key.strip().replace("-", "_"), json.loads(value)
    except json.JSONDecodeError:
        return key.strip().replace("-", "_"), value


def fail(message: str, code: int = 2) -> None:
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)  # one line, however long
    raise typer.Exit(code)


def refuse_damaged(problems: list[str], path) -> None:
    """A damaged input (actionllm/checks.py found `problems`): fail with the first, on one line, pointing to
    `actionllm check` for the rest. Does nothing when there are none."""
    if problems:
        more = f" (and {len(problems) - 1} more: actionllm check {path})" if len(problems) > 1 else ""
        fail(problems[0] + more)
