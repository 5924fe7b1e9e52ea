"""``python -m workflows.cli``: the ``ferryman`` command."""

from workflows.cli import main

main()
