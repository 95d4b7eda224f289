"""``firebreak worker`` as its own process for the tests (the CLI module, on a bare app).

Usage: ``python worker_main.py MODULE:WORKFLOW --bus URL --store URL [...]``; run it with
the directory holding the workflow module as the current directory.
"""

from __future__ import annotations

import typer

from firebreak._cli.worker import register

app = typer.Typer()
register(app)


@app.callback()
def main() -> None:
    """firebreak (the test's shell)."""


if __name__ == "__main__":
    app()
