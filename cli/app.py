"""The Typer application and what every command shares: failing cleanly, quiet libraries."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.markup import escape

from rdistill.cli.render import console

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Compute-matched reasoning distillation: train IFT and reasoning students to the same FLOP budget.",
)
data_app = typer.Typer(no_args_is_help=True, help="Make, inspect and check paired (prompt, ift, reasoning) data.")
app.add_typer(data_app, name="data")


def fail(msg: object) -> NoReturn:
    """Print the error and exit with status 2 (a user error: no traceback)."""
    console.print(f"[bold red]error:[/] {escape(str(msg))}")
    raise typer.Exit(2)


def quiet_libraries() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
