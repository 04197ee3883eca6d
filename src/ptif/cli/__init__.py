"""The ``ptif`` command line: :mod:`ptif.cli.main` parses and dispatches, one module per group of
commands adds their parsers (:mod:`ptif.cli.convert`, :mod:`ptif.cli.queue`,
:mod:`ptif.cli.intake`), and :mod:`ptif.cli.common` holds what they share."""

from ptif.cli.main import run

__all__ = ["run"]
