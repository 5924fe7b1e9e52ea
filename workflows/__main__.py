"""``python -m workflows`` runs the ferryman command."""

from workflows.cli import main

main()
