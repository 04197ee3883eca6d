"""The queue in the process store and the worker that empties it.

:mod:`~ptif.queue.layout` names the process store's folders; :mod:`~ptif.queue.markers` is the
marker contract, :mod:`~ptif.queue.leases` the claims, :mod:`~ptif.queue.failures` the failure
records, :mod:`~ptif.queue.outputs` what an output records and when it is current,
:mod:`~ptif.queue.worker` the claim-convert-publish loop, with its private work folders in
:mod:`~ptif.queue.workdir` and its call into the engine in :mod:`~ptif.queue.conversion`,
:mod:`~ptif.queue.reports` its run reports and :mod:`~ptif.queue.status` what ``ptif status`` and
``ptif retry`` see from outside.
"""
