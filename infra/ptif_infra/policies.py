"""The S3 permissions of the intake function and of the worker task, statement by statement.

Nothing here grants ``s3:*`` or an S3 action on ``*``: each statement names the actions ptif
calls and the bucket or the prefixes it calls them on. ``s3:ListBucket`` is granted on the
buckets ptif reads because without it S3 answers a missing key with 403 instead of 404, and
ptif tells "not there yet" from "not allowed" by that answer.

The process store's folders come from :mod:`ptif.queue.layout`, the one place ptif names them,
so a folder added there is granted here.
"""

from __future__ import annotations

from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3

from ptif.queue.layout import FOLDERS
from ptif_infra.settings import InfraSettings

#: What the worker does under its process folders: read, write, delete (leases, markers).
PROCESS_ACTIONS = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
#: Outputs: a HEAD or GET for up-to-date checks, a PUT (multipart for big pyramids).
IMAGES_ACTIONS = ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"]


def intake_statements(process: s3.IBucket, settings: InfraSettings) -> list[iam.PolicyStatement]:
    """The Lambda function writes markers and nothing else. It reads a marker too: a marker
    is replaced only by a newer event (higher sequencer), so the function reads the one
    there before replacing it (conditional put on its eTag)."""
    queue = process.arn_for_objects(f"{settings.process_prefix}{settings.queue_prefix}*")
    return [
        _allow("WriteMarkers", ["s3:GetObject", "s3:PutObject"], [queue]),
        _list(process, "ListProcessBucket"),
    ]


def task_statements(
    source: s3.IBucket, process: s3.IBucket, images: s3.IBucket, settings: InfraSettings
) -> list[iam.PolicyStatement]:
    """The worker reads sources, works in the process folders and writes pyramids. The same
    role serves `ptif mark`, `reconcile`, `retry` and `status` run as one-off tasks."""
    folders = (settings.queue_prefix, *FOLDERS)
    process_arns = [process.arn_for_objects(f"{settings.process_prefix}{f}*") for f in folders]
    return [
        _allow("ReadSources", ["s3:GetObject"], [_objects(source, settings.source_prefix)]),
        _list(source, "ListSourceBucket"),
        _allow("UseQueue", PROCESS_ACTIONS, process_arns),
        _list(process, "ListProcessBucket"),
        _allow("WriteImages", IMAGES_ACTIONS, [_objects(images, settings.images_prefix)]),
        _list(images, "ListImagesBucket"),
    ]


def _objects(bucket: s3.IBucket, prefix: str) -> str:
    return bucket.arn_for_objects(f"{prefix}*")


def _list(bucket: s3.IBucket, sid: str) -> iam.PolicyStatement:
    return _allow(sid, ["s3:ListBucket"], [bucket.bucket_arn])


def _allow(sid: str, actions: list[str], resources: list[str]) -> iam.PolicyStatement:
    return iam.PolicyStatement(sid=sid, actions=actions, resources=resources)
