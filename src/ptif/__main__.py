"""`python -m ptif` runs the command line."""

from ptif.cli import run

run()
