"""A ``firebreak``-like command line with only ``serve``, as `register` adds it to cli.py."""

from __future__ import annotations

import typer

from firebreak._cli.observe import register

app = typer.Typer(add_completion=False)


@app.callback()
def root() -> None:
    """Keep ``serve`` a subcommand, as in the real command line."""


register(app)

if __name__ == "__main__":
    app()
