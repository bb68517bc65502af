"""``python -m rdistill``: the command line (what torchrun's ``-m rdistill`` runs on every rank)."""

from rdistill.cli.main import main

main()
