"""The three buckets: imported by name, or created locked down (no public access, TLS only,
S3-managed encryption, incomplete multipart uploads cleaned up after a day)."""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from constructs import Construct

from ptif_infra.notifications import allow_notifications, notifications_role
from ptif_infra.settings import InfraSettings


@dataclass(frozen=True)
class Buckets:
    source: s3.IBucket
    process: s3.IBucket
    images: s3.IBucket
    #: The buckets this stack created (the others existed before it).
    created: tuple[s3.Bucket, ...]
    #: The role of CDK's function that sets the source bucket's notifications.
    notifications_role: iam.Role


def make_buckets(scope: Construct, settings: InfraSettings) -> Buckets:
    handler_role = notifications_role(scope)
    source = _bucket(scope, "Source", settings.source_bucket, handler_role.without_policy_updates())
    allow_notifications(handler_role, source)
    process = _bucket(scope, "Process", settings.process_bucket)
    images = _bucket(scope, "Images", settings.images_bucket)
    created = tuple(b for b in (source, process, images) if isinstance(b, s3.Bucket))
    return Buckets(source, process, images, created, handler_role)


def _bucket(
    scope: Construct, role: str, existing: str | None, handler_role: iam.IRole | None = None
) -> s3.IBucket:
    """An existing bucket by name, or a new locked-down one. ``handler_role``: the role of the
    function that sets the bucket's notifications."""
    if existing:
        return s3.Bucket.from_bucket_attributes(
            scope,
            f"{role}Bucket",
            bucket_name=existing,
            notifications_handler_role=handler_role,
        )
    return s3.Bucket(
        scope,
        f"{role}Bucket",
        notifications_handler_role=handler_role,
        block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
        object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
        encryption=s3.BucketEncryption.S3_MANAGED,
        enforce_ssl=True,
        minimum_tls_version=1.2,
        lifecycle_rules=[
            s3.LifecycleRule(
                id="abort-incomplete-multipart-uploads",
                abort_incomplete_multipart_upload_after=Duration.days(1),
            )
        ],
        # Scans and pyramids outlive the stack: `cdk destroy` leaves the buckets.
        removal_policy=RemovalPolicy.RETAIN,
    )
