"""``python -m rmt_deploy.cli`` runs the command line."""
from . import main

main()
