"""The intake: S3 notifications of the source bucket → Lambda ``ptif.aws.handler`` → markers.

The function's code is ptif's own package folder, ``src/ptif``, taken as it is: ptif is pure
Python, the handler never imports pyvips, and boto3 comes with the Lambda runtime. So no
Docker or pip runs at synth time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from aws_cdk import Duration
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_destinations as destinations
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_notifications as notifications
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from ptif_infra.logs import log_group
from ptif_infra.policies import intake_statements
from ptif_infra.settings import InfraSettings, store_url
from ptif_infra.storage import Buckets

REPO = Path(__file__).resolve().parents[2]
#: The folder whose `ptif/` package is the function's code.
CODE_ROOT = REPO / "src"
HANDLER = "ptif.aws.handler"
#: What S3 reports for a new or replaced object, whichever way it was written.
EVENTS = (
    s3.EventType.OBJECT_CREATED_PUT,
    s3.EventType.OBJECT_CREATED_POST,
    s3.EventType.OBJECT_CREATED_COPY,
    s3.EventType.OBJECT_CREATED_COMPLETE_MULTIPART_UPLOAD,
)
#: Lambda retries a failed asynchronous invocation twice, then hands it to the queue.
RETRIES = 2


@dataclass(frozen=True)
class Intake:
    function: lambda_.Function
    role: iam.Role
    #: Events the function could not turn into markers, after Lambda's retries.
    failures: sqs.Queue


def make_intake(scope: Construct, settings: InfraSettings, buckets: Buckets) -> Intake:
    failures = _failure_queue(scope)
    role = _role(scope, buckets, settings)
    function = _function(scope, settings, buckets, role, failures)
    _subscribe(buckets.source, function, settings)
    return Intake(function, role, failures)


def function_code() -> lambda_.Code:
    if not (CODE_ROOT / "ptif" / "aws.py").is_file():
        raise FileNotFoundError(f"{CODE_ROOT / 'ptif' / 'aws.py'}: the handler is missing")
    return lambda_.Code.from_asset(
        str(CODE_ROOT), exclude=["*", "!ptif", "!ptif/**", "**/__pycache__", "**/*.pyc"]
    )


def _failure_queue(scope: Construct) -> sqs.Queue:
    return sqs.Queue(
        scope,
        "IntakeFailures",
        encryption=sqs.QueueEncryption.SQS_MANAGED,
        enforce_ssl=True,
        retention_period=Duration.days(14),
    )


def _role(scope: Construct, buckets: Buckets, settings: InfraSettings) -> iam.Role:
    role = iam.Role(
        scope,
        "IntakeRole",
        assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
        description="ptif intake: writes queue markers for new source images",
    )
    for statement in intake_statements(buckets.process, settings):
        role.add_to_policy(statement)
    return role


def _function(
    scope: Construct,
    settings: InfraSettings,
    buckets: Buckets,
    role: iam.Role,
    failures: sqs.Queue,
) -> lambda_.Function:
    logs = log_group(scope, "IntakeLogs", settings.log_retention_days)
    logs.grant_write(role)
    return lambda_.Function(
        scope,
        "Intake",
        description="ptif intake: S3 notification → marker in the queue",
        runtime=lambda_.Runtime(settings.lambda_runtime, lambda_.RuntimeFamily.PYTHON),
        architecture=lambda_.Architecture.ARM_64,
        handler=HANDLER,
        code=function_code(),
        memory_size=settings.lambda_memory_mib,
        timeout=Duration.seconds(60),
        role=role,
        log_group=logs,
        environment=intake_environment(settings, buckets),
        on_failure=destinations.SqsDestination(failures),
        retry_attempts=RETRIES,
        max_event_age=Duration.hours(6),
    )


def intake_environment(settings: InfraSettings, buckets: Buckets) -> dict[str, str]:
    environment = {
        "PTIF_SOURCE": store_url(buckets.source.bucket_name, settings.source_prefix),
        "PTIF_PROCESS": store_url(buckets.process.bucket_name, settings.process_prefix),
        "PTIF_QUEUE_PREFIX": settings.queue_prefix,
        **settings.recipe_environment(),
    }
    if settings.extensions:
        environment["PTIF_EXTENSIONS"] = settings.extensions
    return environment


def _subscribe(source: s3.IBucket, function: lambda_.Function, settings: InfraSettings) -> None:
    """One notification per event type (and per suffix: S3 takes one suffix per rule)."""
    destination = notifications.LambdaDestination(function)
    for event in EVENTS:
        for key_filter in _filters(settings):
            source.add_event_notification(event, destination, *key_filter)


def _filters(settings: InfraSettings) -> list[list[s3.NotificationKeyFilter]]:
    """The key filters of each rule; a rule without any takes every key."""
    prefix = settings.source_prefix or None
    if settings.notification_suffixes:
        suffixes = settings.notification_suffixes
        return [[s3.NotificationKeyFilter(prefix=prefix, suffix=s)] for s in suffixes]
    return [[s3.NotificationKeyFilter(prefix=prefix)]] if prefix else [[]]
