"""`python -m ptif` runs the command line."""

from ptif.cli.main import run

run()
