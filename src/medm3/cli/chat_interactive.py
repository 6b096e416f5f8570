"""`m3 chat` without a PROMPT: questions read one per line, commands, the history kept.

Lines starting with ``/`` are commands (:data:`COMMANDS`), handled the same
whether stdin is a terminal or a pipe; they never reach the model.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from medm3.errors import InputError


def say_where(out_dir: Path) -> None:
    """Tell where the run's files went (when it wrote any)."""
    if out_dir.is_dir():
        click.echo(f"files: {out_dir}", err=True)


#: Interactive commands (the same with a terminal and with piped input).
COMMANDS = {
    "/help": "list these commands",
    "/files": "files written so far (views, overlays, label maps, results)",
    "/trace": "the last answer's trace as JSON",
    "/exit": "leave (also /quit, exit, quit, Ctrl-D)",
}


def _command(line: str, state: dict[str, Any]) -> bool:
    """Handle an interactive command; ``False`` means leave. Never sent to the model."""
    word = line.split()[0].lower()
    if word in ("/exit", "/quit"):
        return False
    if word == "/help":
        for name, what in COMMANDS.items():
            click.echo(f"  {name:<8} {what}", err=True)
    elif word == "/files":
        for path in state["files"] or ["(none yet)"]:
            click.echo(f"  {path}", err=True)
    elif word == "/trace":
        click.echo(json.dumps(state["trace"], indent=2, default=str))
    else:
        click.echo(f"m3: error: unknown command {word}; /help lists them", err=True)
    return True


def interactive(session: Any, as_json: bool, stream: Any) -> None:
    """Read questions until EOF, /exit or 'exit'; the history is kept.

    Args:
        session: The :class:`medm3.agent.ChatSession`.
        as_json: Print each answer and its trace as one JSON line.
        stream: Called with each piece of generated text (when not ``as_json``).


    Lines starting with ``/`` are commands (:data:`COMMANDS`), handled the same
    whether stdin is a terminal or a pipe; they never reach the model.
    """
    interactive = sys.stdin.isatty()
    if interactive:
        click.echo("Ask about the scan (/help for commands, /exit or Ctrl-D to leave).", err=True)
    state: dict[str, Any] = {"files": [], "trace": []}
    while True:
        try:
            question = input("you> " if interactive else "")
        except EOFError:
            break
        text = question.strip()
        if text.lower() in ("exit", "quit"):
            break
        if not text:
            continue
        if text.startswith("/"):
            if not _command(text, state):
                break
            continue
        try:
            reply = session.ask(question, on_text=None if as_json else stream)
        except InputError as exc:  # e.g. a question that was only "<image>": say so, go on
            click.echo(f"m3: error: {exc.message}", err=True)
            continue
        state["trace"] = reply.trace
        state["files"].extend(
            f for step in reply.trace for f in step.get("files", []) if f not in state["files"]
        )
        if as_json:
            click.echo(json.dumps({"answer": reply.text, "trace": reply.trace}, default=str))
        else:
            click.echo()
    if not as_json:
        say_where(session.config.output_dir)
