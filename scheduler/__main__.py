"""``python -m scheduler`` runs the ``wattsched`` command."""

from scheduler.cli import main

main()
