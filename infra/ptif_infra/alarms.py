"""Alarms on what `ptif process` reports (its CloudWatch embedded-metric line: namespace
``ptif``, dimension ``Stage=process``) and on the intake's failure queue. In elastic mode the
queue's age comes from the backlog publisher, which reports every minute whether or not a task
runs, and the publisher's own errors raise an alarm: without its figures the service stays as
it is."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from ptif.queue.layout import FAILED_PREFIX
from ptif_infra.elastic import BacklogPublisher, oldest_pending_metric
from ptif_infra.settings import InfraSettings

NAMESPACE = "ptif"
DIMENSIONS = {"Stage": "process"}
#: A marker older than this was missed by at least one daily run: the runs do not keep up.
OLDEST_PENDING_LIMIT = Duration.hours(26)


def make_alarms(
    scope: Construct,
    settings: InfraSettings,
    intake_failures: sqs.IQueue,
    backlog: BacklogPublisher | None = None,
) -> list[cloudwatch.Alarm]:
    alarms = [
        _failed_images(scope),
        _oldest_pending(scope, settings),
        _intake_failures(scope, intake_failures),
    ]
    if backlog is not None:
        alarms.append(_publisher_errors(scope, backlog))
    elif not settings.always_on:
        alarms.append(_run_missing(scope))
    topic = _topic(scope, settings)
    if topic is not None:
        for alarm in alarms:
            alarm.add_alarm_action(actions.SnsAction(topic))
    return alarms


def run_metric(name: str, statistic: str, period: Duration) -> cloudwatch.Metric:
    return cloudwatch.Metric(
        namespace=NAMESPACE,
        metric_name=name,
        dimensions_map=DIMENSIONS,
        statistic=statistic,
        period=period,
    )


def _failed_images(scope: Construct) -> cloudwatch.Alarm:
    return cloudwatch.Alarm(
        scope,
        "FailedImagesAlarm",
        alarm_description="ptif: images failed for good in the last day; see `ptif status` "
        f"and the failure records under {FAILED_PREFIX} in the process bucket",
        metric=run_metric("Failed", "Sum", Duration.days(1)),
        threshold=0,
        comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        evaluation_periods=1,
        treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
    )


def _oldest_pending(scope: Construct, settings: InfraSettings) -> cloudwatch.Alarm:
    if settings.elastic:
        metric = oldest_pending_metric(settings).with_(period=Duration.hours(1))
        advice = "the tasks are not keeping up (raise maxTasks, taskCpu or workers)"
    else:
        metric = run_metric("OldestPendingAgeSeconds", "Maximum", Duration.days(1))
        advice = "the daily run is not keeping up (raise taskCount, taskCpu or workers)"
    return cloudwatch.Alarm(
        scope,
        "OldestPendingAlarm",
        alarm_description=f"ptif: a queued image has waited over 26 hours; {advice}",
        metric=metric,
        threshold=OLDEST_PENDING_LIMIT.to_seconds(),
        comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        evaluation_periods=1,
        treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
    )


def _run_missing(scope: Construct) -> cloudwatch.Alarm:
    """No run reported for 26 hours: the schedule, the image or the task is broken."""
    return cloudwatch.Alarm(
        scope,
        "RunMissingAlarm",
        alarm_description="ptif: no `ptif process` run reported in 26 hours; check the "
        "schedule and the task's stopped reason in ECS",
        metric=run_metric("Processed", "SampleCount", OLDEST_PENDING_LIMIT),
        threshold=1,
        comparison_operator=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
        evaluation_periods=1,
        treat_missing_data=cloudwatch.TreatMissingData.BREACHING,
    )


def _publisher_errors(scope: Construct, backlog: BacklogPublisher) -> cloudwatch.Alarm:
    """Without the backlog figures the service neither starts nor stops tasks."""
    return cloudwatch.Alarm(
        scope,
        "BacklogPublisherAlarm",
        alarm_description="ptif: the backlog function failed for 10 minutes; the worker "
        "service is not being sized (see the function's log)",
        metric=backlog.function.metric_errors(statistic="Sum", period=Duration.minutes(1)),
        threshold=0,
        comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        evaluation_periods=10,
        treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
    )


def _intake_failures(scope: Construct, queue: sqs.IQueue) -> cloudwatch.Alarm:
    return cloudwatch.Alarm(
        scope,
        "IntakeFailuresAlarm",
        alarm_description="ptif: S3 events the intake function could not queue; the "
        "uploads are not marked (run `ptif reconcile`, then purge the queue)",
        metric=queue.metric_approximate_number_of_messages_visible(
            statistic="Maximum", period=Duration.minutes(5)
        ),
        threshold=0,
        comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        evaluation_periods=1,
        treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
    )


def _topic(scope: Construct, settings: InfraSettings) -> sns.ITopic | None:
    if settings.alarm_topic_arn:
        return sns.Topic.from_topic_arn(scope, "AlarmTopic", settings.alarm_topic_arn)
    if not settings.alarm_email:
        return None
    topic = sns.Topic(scope, "AlarmTopic", display_name="ptif alarms", enforce_ssl=True)
    topic.add_subscription(subscriptions.EmailSubscription(settings.alarm_email))
    return topic
