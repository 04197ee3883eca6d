"""The deployment's settings, read once: CDK context (``cdk deploy -c sourceBucket=scans``),
then the environment (``PTIF_CDK_SOURCE_BUCKET=scans``), then the default.

Every setting is named in :data:`DEFAULTS`; its environment variable is ``PTIF_CDK_`` and the
context key in upper snake case.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from ptif.config import RECIPE_ENVIRONMENT
from ptif.convert.profiles import get_profile
from ptif.errors import ConfigError
from ptif.queue.layout import DEFAULT_QUEUE_PREFIX, queue_prefix_problem
from ptif.stores.overlap import overlap

#: Context key → default. ``None``: not set (a new bucket, VPC or cluster is made, and so on).
DEFAULTS: dict[str, Any] = {
    "stackName": "ptif",
    # Buckets: the name of an existing one, else the stack creates it.
    "sourceBucket": None,
    "processBucket": None,
    "imagesBucket": None,
    # Prefixes inside the buckets ("" or "scans/"); sourcePrefix also filters the notifications.
    "sourcePrefix": "",
    "processPrefix": "",
    "imagesPrefix": "",
    "queuePrefix": DEFAULT_QUEUE_PREFIX,
    # Notifications: only keys ending with one of these (comma-separated, case-sensitive).
    "notificationSuffixes": "",
    # ptif's own settings, passed to the Lambda function and the task. The conversion settings
    # (unset: the profile's) become PTIF_COMPRESSION… in both, so they resolve one recipe.
    "profile": "default",
    "compression": None,
    "quality": None,
    "tileSize": None,
    "dpi": None,
    "maxWidth": None,
    "maxHeight": None,
    "extensions": None,
    "minAge": 0,
    "workers": None,
    # The Fargate task.
    "taskCpu": 2048,
    "taskMemoryMiB": 8192,
    "ephemeralStorageGiB": 50,
    "taskCount": 1,
    # Elastic mode: above 1, a service sized from 0 to maxTasks on the backlog, backlogPerTask
    # pending markers per task (docs/operations.md, "Elastic scale-out").
    "maxTasks": 1,
    "backlogPerTask": 500,
    "cpuArchitecture": "x86_64",
    "imageUri": None,
    "alwaysOn": False,
    "schedule": "cron(30 5 * * ? *)",
    "scheduleTimeZone": "America/New_York",
    "scheduleRetries": 3,
    # Network and cluster: existing ones, else a small public-subnet VPC and a new cluster.
    "vpcId": None,
    "subnetIds": "",
    "assignPublicIp": None,
    "clusterName": None,
    "containerInsights": True,
    # The Lambda function.
    "lambdaRuntime": "python3.12",
    "lambdaMemoryMiB": 256,
    # Logs and alarms.
    "logRetentionDays": 90,
    "alarmTopicArn": None,
    "alarmEmail": None,
}

#: What CloudWatch Logs accepts as a retention, in days.
#: The most tasks an elastic deployment may run.
MAX_TASKS = 100
RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827)
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class SettingsError(ValueError):
    """A deployment setting is missing or out of range; the message names it."""


def environment_name(key: str) -> str:
    """``sourceBucket`` → ``PTIF_CDK_SOURCE_BUCKET``."""
    return "PTIF_CDK_" + re.sub(r"(?<=[a-z0-9])(?=[A-Z][a-z])", "_", key).upper()


@dataclass(frozen=True)
class InfraSettings:
    stack_name: str
    source_bucket: str | None
    process_bucket: str | None
    images_bucket: str | None
    source_prefix: str
    process_prefix: str
    images_prefix: str
    queue_prefix: str
    notification_suffixes: tuple[str, ...]
    profile: str
    compression: str | None
    quality: int | None
    tile_size: int | None
    dpi: float | None
    max_width: int | None
    max_height: int | None
    extensions: str | None
    min_age: float
    workers: int | None
    task_cpu: int
    task_memory_mib: int
    ephemeral_storage_gib: int
    task_count: int
    max_tasks: int
    backlog_per_task: int
    cpu_architecture: str
    image_uri: str | None
    always_on: bool
    schedule: str
    schedule_time_zone: str
    schedule_retries: int
    vpc_id: str | None
    subnet_ids: tuple[str, ...]
    assign_public_ip: bool | None
    cluster_name: str | None
    container_insights: bool
    lambda_runtime: str
    lambda_memory_mib: int
    log_retention_days: int
    alarm_topic_arn: str | None
    alarm_email: str | None

    def __post_init__(self) -> None:
        for name in ("source_prefix", "process_prefix", "images_prefix"):
            _check_prefix(name, getattr(self, name), may_be_empty=True)
        _check_prefix("queue_prefix", self.queue_prefix, may_be_empty=False)
        problem = queue_prefix_problem(self.queue_prefix)
        if problem:
            raise SettingsError(f"queuePrefix: {problem}")
        if not 1 <= self.task_count <= 10:
            raise SettingsError(
                f"taskCount must be 1 to 10 (one RunTask call), not {self.task_count}"
            )
        self._check_elastic()
        if not 21 <= self.ephemeral_storage_gib <= 200:
            raise SettingsError(
                f"ephemeralStorageGiB must be 21 to 200 (Fargate), not {self.ephemeral_storage_gib}"
            )
        if self.cpu_architecture not in ("x86_64", "arm64"):
            raise SettingsError(
                f"cpuArchitecture is x86_64 or arm64, not {self.cpu_architecture!r}"
            )
        if self.log_retention_days not in RETENTION_DAYS:
            raise SettingsError(
                f"logRetentionDays must be one of {RETENTION_DAYS}, not {self.log_retention_days}"
            )
        if self.subnet_ids and not self.vpc_id:
            raise SettingsError("subnetIds needs vpcId: subnets belong to an existing VPC")
        try:  # refused now, not by the task at 05:30
            get_profile(self.profile).with_overrides(**self.recipe_settings())
        except ConfigError as error:
            raise SettingsError(f"conversion settings: {error}") from None

    @property
    def elastic(self) -> bool:
        """A service that the backlog sizes, instead of the daily run."""
        return self.max_tasks > 1

    def _check_elastic(self) -> None:
        if not 1 <= self.max_tasks <= MAX_TASKS:
            raise SettingsError(f"maxTasks must be 1 to {MAX_TASKS}, not {self.max_tasks}")
        if self.backlog_per_task < 1:
            raise SettingsError(f"backlogPerTask must be 1 or more, not {self.backlog_per_task}")
        if not self.elastic:
            return
        if self.task_count > self.max_tasks:
            raise SettingsError(
                f"taskCount ({self.task_count}) is more than maxTasks ({self.max_tasks}): with "
                "alwaysOn, taskCount tasks run even when the queue is empty"
            )
        if self.task_count > 1 and not self.always_on:
            raise SettingsError(
                f"taskCount {self.task_count} has no effect with maxTasks above 1: the backlog "
                "sizes the service from 0; set alwaysOn to keep taskCount tasks running"
            )

    def recipe_environment(self) -> dict[str, str]:
        """The profile and conversion settings as ptif reads them, for every part that
        converts or judges whether an output is current."""
        environment = {"PTIF_PROFILE": self.profile}
        for name, value in self.recipe_settings().items():
            text = f"{value:g}" if isinstance(value, float) else str(value)
            environment[RECIPE_ENVIRONMENT[name]] = text
        return environment

    def recipe_settings(self) -> dict[str, Any]:
        """The conversion settings given, by ptif's name for each."""
        # A recipe setting the stack does not offer (all_pages) keeps ptif's default.
        given = {name: getattr(self, name, None) for name in RECIPE_ENVIRONMENT}
        return {name: value for name, value in given.items() if value is not None}


def load_settings(
    context: Callable[[str], Any], environ: Mapping[str, str] | None = None
) -> InfraSettings:
    """Read every setting: ``context(key)`` (CDK's ``try_get_context``), then the environment."""
    environ = os.environ if environ is None else environ
    raw = {key: _lookup(key, context, environ) for key in DEFAULTS}
    values = {
        f.name: _convert(f.name, str(f.type), raw[_camel(f.name)]) for f in fields(InfraSettings)
    }
    settings = InfraSettings(**values)
    _refuse_overlap(settings, lambda key: _origin(key, context, environ))
    return settings


def _refuse_overlap(settings: InfraSettings, origin: Callable[[str], str]) -> None:
    """Existing buckets given for two stores must not hold one in the other: ptif's own rule
    (a bucket the stack creates is a store's alone)."""
    urls, origins = {}, {}
    for role in ("source", "process", "images"):
        bucket, prefix = getattr(settings, f"{role}_bucket"), getattr(settings, f"{role}_prefix")
        if bucket:
            urls[role] = store_url(bucket, prefix)
            keys = [f"{role}Bucket", *([f"{role}Prefix"] if prefix else [])]
            origins[role] = ", ".join(origin(key) for key in keys)
    problem = overlap(urls, origins)
    if problem:
        raise SettingsError(problem)


def _origin(key: str, context: Callable[[str], Any], environ: Mapping[str, str]) -> str:
    """Where ``key`` was set, for messages: ``context sourceBucket`` or its variable."""
    if context(key) is not None:
        return f"context {key}"
    if environ.get(environment_name(key)) is not None:
        return environment_name(key)
    return f"default {key}"


def _lookup(key: str, context: Callable[[str], Any], environ: Mapping[str, str]) -> Any:
    value = context(key)
    if value is None:
        value = environ.get(environment_name(key))
    return DEFAULTS[key] if value is None else value


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    camel = head + "".join(part.capitalize() for part in rest)
    return camel.replace("Mib", "MiB").replace("Gib", "GiB")


def _convert(name: str, kind: str, value: Any) -> Any:
    """``value`` (from context, environment or default) as the field's type ``kind``."""
    optional = "None" in kind
    if value is None or (optional and str(value).strip() == ""):
        if optional:
            return None
        raise SettingsError(f"{_camel(name)} needs a value")
    converter = _CONVERTERS[kind.split("|")[0].strip()]
    try:
        return converter(value)
    except (TypeError, ValueError):
        raise SettingsError(f"{_camel(name)}: {value!r} is not a valid {kind}") from None


def _split(value: Any) -> tuple[str, ...]:
    items = value if isinstance(value, list | tuple) else str(value).split(",")
    return tuple(str(item).strip() for item in items if str(item).strip())


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE | _FALSE:
        return text in _TRUE
    raise ValueError(value)


_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "str": lambda value: str(value).strip(),
    "int": int,
    "float": float,
    "bool": _boolean,
    "tuple[str, ...]": _split,
}


def _check_prefix(name: str, value: str, *, may_be_empty: bool) -> None:
    if (not value and may_be_empty) or (value.endswith("/") and not value.startswith("/")):
        return
    raise SettingsError(f"{_camel(name)} {value!r} must end with '/' and not start with one")


def store_url(bucket_name: str, prefix: str) -> str:
    """The ptif store URL of a bucket (a name or a CDK token) and prefix: ``s3://b/scans``."""
    return f"s3://{bucket_name}/{prefix}".rstrip("/")
