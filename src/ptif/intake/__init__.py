"""Intake: turning "this object arrived" into a marker, whoever noticed it.

:mod:`~ptif.intake.events` reads S3 notifications (for :mod:`ptif.aws`),
:mod:`~ptif.intake.watch` follows a folder or bucket, :mod:`~ptif.intake.mark` re-marks what is
there and :mod:`~ptif.intake.reconcile` marks what is missing or stale. All decide alike what is
in scope (:mod:`~ptif.intake.scope`) and queue with :mod:`~ptif.intake.enqueue`.
"""
