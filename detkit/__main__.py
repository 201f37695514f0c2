"""`python -m detkit` runs the CLI."""
from detkit.cli.main import main

main()
