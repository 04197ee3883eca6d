"""Elastic mode (``maxTasks`` above 1): the backlog sizes the worker service from 0 to ``maxTasks``.

- **The backlog metric.** A small function, ``ptif.aws.backlog_handler`` (ptif's own code, as
  the intake's), runs every minute from an EventBridge Scheduler schedule, counts the queue in
  one streaming listing and puts ``PendingMarkers`` and ``OldestPendingAgeSeconds`` in the
  ``ptif`` namespace, dimensions ``Stack`` and ``Queue``. It may list the queue prefix and put
  metrics in that namespace, nothing else.
- **The scaling.** Step scaling with exact capacities, the shape AWS documents for queue workers
  where target tracking cannot work: target tracking multiplies the running count, so from 0
  tasks it never starts one. One alarm (backlog at least 1 marker) sets the count to
  ``ceil(backlog / backlogPerTask)``, at most ``maxTasks``, re-evaluated each minute while the
  queue holds work; the other (backlog 0 for :data:`IDLE_MINUTES`) sets it to the minimum, 0
  (``taskCount`` with ``alwaysOn``). A missing metric changes nothing (the alarms go to
  INSUFFICIENT_DATA; the publisher's errors have their own alarm).
- **Scaling in.** ECS stops the tasks over the count with SIGTERM; ptif finishes or releases the
  work in hand (``PTIF_STOP_GRACE_SECONDS``, under the task's stop timeout), so nothing is lost and
  another task takes the released markers at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from aws_cdk import Duration
from aws_cdk import aws_applicationautoscaling as appscaling
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_scheduler_targets as targets
from constructs import Construct

from ptif.config import METRICS_DIMENSIONS_VARIABLE, METRICS_NAMESPACE_VARIABLE
from ptif.queue.backlog import NAMESPACE, OLDEST_METRIC, PENDING_METRIC
from ptif_infra.intake import function_code, intake_environment
from ptif_infra.logs import log_group
from ptif_infra.settings import InfraSettings
from ptif_infra.storage import Buckets

BACKLOG_HANDLER = "ptif.aws.backlog_handler"
PUBLISH_EVERY = Duration.minutes(1)
#: Under the schedule's interval, so two counts never overlap; the listing stops 10 s earlier.
PUBLISHER_TIMEOUT = Duration.seconds(55)
#: Minutes of an empty queue before the service goes down to its minimum.
IDLE_MINUTES = 5
#: Application Auto Scaling takes at most 20 steps a policy; ptif uses at most this many.
MAX_STEPS = 10


@dataclass(frozen=True)
class Scaling:
    target: appscaling.ScalableTarget
    #: Markers are queued: the count follows the backlog.
    busy: cloudwatch.Alarm
    #: The queue has been empty for IDLE_MINUTES: down to the minimum.
    idle: cloudwatch.Alarm


@dataclass(frozen=True)
class BacklogPublisher:
    function: lambda_.Function
    role: iam.Role
    schedule: scheduler.Schedule


def backlog_metric(
    settings: InfraSettings, name: str = PENDING_METRIC, statistic: str = "Maximum"
) -> cloudwatch.Metric:
    """A figure the publisher puts, per minute."""
    return cloudwatch.Metric(
        namespace=NAMESPACE,
        metric_name=name,
        dimensions_map=backlog_dimensions(settings),
        statistic=statistic,
        period=Duration.minutes(1),
    )


def oldest_pending_metric(settings: InfraSettings) -> cloudwatch.Metric:
    return backlog_metric(settings, OLDEST_METRIC)


def backlog_dimensions(settings: InfraSettings) -> dict[str, str]:
    return {"Stack": settings.stack_name, "Queue": settings.queue_prefix}


def make_backlog_publisher(
    scope: Construct, settings: InfraSettings, buckets: Buckets
) -> BacklogPublisher:
    role = iam.Role(
        scope,
        "BacklogRole",
        assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
        description="ptif backlog: lists the queue and puts its size in CloudWatch",
    )
    for statement in publisher_statements(settings, buckets):
        role.add_to_policy(statement)
    logs = log_group(scope, "BacklogLogs", settings.log_retention_days)
    logs.grant_write(role)
    dimensions = ",".join(f"{k}={v}" for k, v in backlog_dimensions(settings).items())
    function = lambda_.Function(
        scope,
        "Backlog",
        description="ptif backlog: counts the queue every minute for scaling and the dashboard",
        runtime=lambda_.Runtime(settings.lambda_runtime, lambda_.RuntimeFamily.PYTHON),
        architecture=lambda_.Architecture.ARM_64,
        handler=BACKLOG_HANDLER,
        code=function_code(),
        memory_size=settings.lambda_memory_mib,
        timeout=PUBLISHER_TIMEOUT,
        role=role,
        log_group=logs,
        retry_attempts=0,  # the next minute's count replaces a failed one
        environment={
            **intake_environment(settings, buckets),
            METRICS_NAMESPACE_VARIABLE: NAMESPACE,
            METRICS_DIMENSIONS_VARIABLE: dimensions,
        },
    )
    schedule = scheduler.Schedule(
        scope,
        "BacklogEveryMinute",
        description="ptif: count the queue for scaling and the dashboard",
        schedule=scheduler.ScheduleExpression.rate(PUBLISH_EVERY),
        target=targets.LambdaInvoke(function, retry_attempts=0, max_event_age=Duration.minutes(1)),
    )
    return BacklogPublisher(function, role, schedule)


def publisher_statements(settings: InfraSettings, buckets: Buckets) -> list[iam.PolicyStatement]:
    """Listing the queue prefix (no object is read) and putting metrics in ptif's namespace:
    PutMetricData has no resource-level permissions, so the namespace condition is the bound."""
    queue = f"{settings.process_prefix}{settings.queue_prefix}"
    return [
        iam.PolicyStatement(
            sid="ListQueue",
            actions=["s3:ListBucket"],
            resources=[buckets.process.bucket_arn],
            conditions={"StringLike": {"s3:prefix": [queue, f"{queue}*"]}},
        ),
        iam.PolicyStatement(
            sid="PutBacklogMetrics",
            actions=["cloudwatch:PutMetricData"],
            resources=["*"],
            conditions={"StringEquals": {"cloudwatch:namespace": NAMESPACE}},
        ),
    ]


def scale_on_backlog(
    scope: Construct, settings: InfraSettings, cluster: ecs.ICluster, service: ecs.FargateService
) -> Scaling:
    """Application Auto Scaling of the service's desired count on the backlog (see the module)."""
    minimum = settings.task_count if settings.always_on else 0
    target = appscaling.ScalableTarget(
        scope,
        "WorkerScaling",
        service_namespace=appscaling.ServiceNamespace.ECS,
        resource_id=f"service/{cluster.cluster_name}/{service.service_name}",
        scalable_dimension="ecs:service:DesiredCount",
        min_capacity=minimum,
        max_capacity=settings.max_tasks,
    )
    busy = _busy(scope, settings, target)
    idle = _idle(scope, settings, target, minimum)
    return Scaling(target, busy, idle)


def _exact_count(
    scope: Construct, name: str, target: appscaling.ScalableTarget
) -> appscaling.StepScalingAction:
    """A step action that sets the task count itself (not a change to it), at most once a
    minute, judged on the metric's maximum."""
    return appscaling.StepScalingAction(
        scope,
        name,
        scaling_target=target,
        adjustment_type=appscaling.AdjustmentType.EXACT_CAPACITY,
        metric_aggregation_type=appscaling.MetricAggregationType.MAXIMUM,
        cooldown=Duration.minutes(1),
    )


def _busy(
    scope: Construct, settings: InfraSettings, target: appscaling.ScalableTarget
) -> cloudwatch.Alarm:
    """At least one marker queued: the count :func:`scaling_steps` gives for the backlog."""
    action = _exact_count(scope, "ScaleOnBacklog", target)
    for lower, upper, count in scaling_steps(settings):
        # Bounds are relative to the alarm's threshold, 1 marker.
        action.add_adjustment(
            adjustment=count,
            lower_bound=lower - 1,
            upper_bound=None if upper is None else upper - 1,
        )
    return _backlog_alarm(
        scope,
        "BacklogAlarm",
        settings,
        action,
        f"ptif: markers are queued; the worker service runs one task per "
        f"{settings.backlog_per_task} of them, up to {settings.max_tasks}",
        threshold=1,
        comparison=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        periods=1,
    )


def _idle(
    scope: Construct, settings: InfraSettings, target: appscaling.ScalableTarget, minimum: int
) -> cloudwatch.Alarm:
    """No marker for :data:`IDLE_MINUTES` minutes: down to the minimum."""
    action = _exact_count(scope, "ScaleInWhenIdle", target)
    action.add_adjustment(adjustment=minimum, upper_bound=0)
    return _backlog_alarm(
        scope,
        "QueueEmptyAlarm",
        settings,
        action,
        f"ptif: the queue has been empty for {IDLE_MINUTES} minutes; the "
        f"worker service goes down to {minimum} task(s)",
        threshold=0,
        comparison=cloudwatch.ComparisonOperator.LESS_THAN_OR_EQUAL_TO_THRESHOLD,
        periods=IDLE_MINUTES,
    )


def _backlog_alarm(
    scope: Construct,
    name: str,
    settings: InfraSettings,
    action: appscaling.StepScalingAction,
    description: str,
    *,
    threshold: int,
    comparison: cloudwatch.ComparisonOperator,
    periods: int,
) -> cloudwatch.Alarm:
    """An alarm on the backlog metric that sets the worker count through ``action``; a missing
    metric changes nothing."""
    alarm = cloudwatch.Alarm(
        scope,
        name,
        alarm_description=description,
        metric=backlog_metric(settings),
        threshold=threshold,
        comparison_operator=comparison,
        evaluation_periods=periods,
        treat_missing_data=cloudwatch.TreatMissingData.MISSING,
    )
    alarm.add_alarm_action(actions.ApplicationScalingAction(action))
    return alarm


def scaling_steps(settings: InfraSettings) -> list[tuple[int, int | None, int]]:
    """Backlog → tasks, as (lower, upper or None, tasks): from 1 marker, the counts of
    :func:`task_counts`, each for backlogs up to ``count * backlogPerTask`` (the last open)."""
    per_task, steps, lower = settings.backlog_per_task, [], 1
    for count in task_counts(settings.max_tasks):
        upper = None if count == settings.max_tasks else count * per_task + 1
        steps.append((lower, upper, count))
        lower = upper or lower
    return steps


def task_counts(max_tasks: int) -> list[int]:
    """1, then up to :data:`MAX_STEPS` evenly spaced counts ending at ``max_tasks``."""
    steps = min(max_tasks, MAX_STEPS)
    return sorted({1, *(math.ceil(max_tasks * i / steps) for i in range(1, steps + 1))})
