"""``python -m firebreak``."""

from firebreak.cli import main

main()
