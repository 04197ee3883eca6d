"""The CloudWatch dashboard of the pipeline: queue, throughput, speed, tasks, intake, alarms.

Every figure already exists or costs no API call: the backlog publisher's (elastic mode), the
embedded-metric line each ``ptif process`` pass prints (``Processed``, ``Failed``, ``BytesIn``,
``BytesOut``, ``OldestPendingAgeSeconds``), the worker log's metric filter
(``ConversionSeconds``), Container Insights (tasks), Lambda and SQS. docs/operations.md
("The dashboard") says what each widget means and what to do when it looks wrong.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch

from ptif.queue.backlog import PENDING_METRIC
from ptif_infra.alarms import NAMESPACE, run_metric
from ptif_infra.elastic import backlog_metric, oldest_pending_metric
from ptif_infra.worker import CONVERSION_SECONDS

if TYPE_CHECKING:
    from ptif_infra.stack import PtifStack

HOUR = Duration.hours(1)
WIDTH = 12
HEIGHT = 6
#: Widget titles, the dashboard's contract with docs/operations.md and the tests.
TITLES = (
    "Alarms",
    "Backlog: pending markers",
    "Oldest pending marker (seconds)",
    "Images per hour",
    "Bytes per hour",
    "Conversion seconds per image",
    "Worker tasks",
    "Lambda errors and throttles",
    "Intake failure queue (DLQ)",
)


def make_dashboard(scope: PtifStack, stack: PtifStack) -> cloudwatch.Dashboard:
    dashboard = cloudwatch.Dashboard(
        scope,
        "Dashboard",
        dashboard_name=f"{stack.settings.stack_name}-pipeline",
        default_interval=Duration.days(1),
    )
    dashboard.add_widgets(
        cloudwatch.AlarmStatusWidget(title=TITLES[0], alarms=_every_alarm(stack), width=24)
    )
    dashboard.add_widgets(_backlog(stack), _oldest(stack))
    dashboard.add_widgets(_images(stack), _bytes())
    dashboard.add_widgets(_seconds(), _tasks(stack))
    dashboard.add_widgets(_lambdas(stack), _dead_letters(stack))
    return dashboard


def _every_alarm(stack: PtifStack) -> list[cloudwatch.IAlarm]:
    alarms: list[cloudwatch.IAlarm] = list(stack.alarms)
    scaling = stack.worker.scaling
    if scaling is not None:
        alarms += [scaling.busy, scaling.idle]
    return alarms


def _graph(title: str, left: list[cloudwatch.IMetric], **extra: object) -> cloudwatch.GraphWidget:
    return cloudwatch.GraphWidget(title=title, left=left, width=WIDTH, height=HEIGHT, **extra)  # type: ignore[arg-type]


def _alarm(stack: PtifStack, logical: str) -> cloudwatch.Alarm:
    found = stack.node.find_child(logical)
    assert isinstance(found, cloudwatch.Alarm)
    return found


def _backlog(stack: PtifStack) -> cloudwatch.IWidget:
    settings = stack.settings
    if not settings.elastic:  # no publisher: what the daily run saw is in its report
        return cloudwatch.TextWidget(
            markdown=f"### {TITLES[1]}\nCounted every minute in elastic mode (`maxTasks` above "
            "1). With the daily run, `ptif status` counts the queue.",
            width=WIDTH,
            height=HEIGHT,
        )
    annotations = []
    scaling = stack.worker.scaling
    if scaling is not None:
        annotations.append(scaling.busy.to_annotation())
    return _graph(
        TITLES[1],
        [backlog_metric(settings).with_(label=PENDING_METRIC)],
        left_annotations=annotations,
    )


def _oldest(stack: PtifStack) -> cloudwatch.IWidget:
    settings = stack.settings
    if settings.elastic:
        metric = oldest_pending_metric(settings)
    else:
        metric = run_metric("OldestPendingAgeSeconds", "Maximum", HOUR)
    alarm = _alarm(stack, "OldestPendingAlarm")
    return _graph(TITLES[2], [metric], left_annotations=[alarm.to_annotation()])


def _images(stack: PtifStack) -> cloudwatch.IWidget:
    failed = _alarm(stack, "FailedImagesAlarm")
    return _graph(
        TITLES[3],
        [
            run_metric("Processed", "Sum", HOUR).with_(label="converted"),
            run_metric("Failed", "Sum", HOUR).with_(label="failed"),
        ],
        left_annotations=[failed.to_annotation()],
    )


def _bytes() -> cloudwatch.IWidget:
    return _graph(
        TITLES[4],
        [
            run_metric("BytesIn", "Sum", HOUR).with_(label="read from sources"),
            run_metric("BytesOut", "Sum", HOUR).with_(label="pyramids written"),
        ],
    )


def _seconds() -> cloudwatch.IWidget:
    def seconds(statistic: str) -> cloudwatch.Metric:
        return cloudwatch.Metric(
            namespace=NAMESPACE,
            metric_name=CONVERSION_SECONDS,
            statistic=statistic,
            period=Duration.minutes(5),
            label=statistic,
        )

    return _graph(TITLES[5], [seconds("p50"), seconds("p95")])


def _tasks(stack: PtifStack) -> cloudwatch.IWidget:
    """Container Insights' task counts (on by default: ``containerInsights``)."""
    cluster = stack.worker.cluster.cluster_name
    service = stack.worker.service

    def insights(name: str, label: str, **dimensions: str) -> cloudwatch.Metric:
        return cloudwatch.Metric(
            namespace="ECS/ContainerInsights",
            metric_name=name,
            dimensions_map={"ClusterName": cluster, **dimensions},
            statistic="Maximum",
            period=Duration.minutes(1),
            label=label,
        )

    if service is None:
        return _graph(TITLES[6], [insights("TaskCount", "tasks in the cluster")])
    name = service.service_name
    return _graph(
        TITLES[6],
        [
            insights("RunningTaskCount", "running", ServiceName=name),
            insights("DesiredTaskCount", "desired", ServiceName=name),
        ],
    )


def _lambdas(stack: PtifStack) -> cloudwatch.IWidget:
    functions = [("intake", stack.intake.function)]
    if stack.backlog is not None:
        functions.append(("backlog", stack.backlog.function))
    metrics: list[cloudwatch.IMetric] = []
    for name, function in functions:
        metrics.append(function.metric_errors(statistic="Sum", label=f"{name} errors"))
        metrics.append(function.metric_throttles(statistic="Sum", label=f"{name} throttles"))
    return _graph(TITLES[7], metrics)


def _dead_letters(stack: PtifStack) -> cloudwatch.IWidget:
    queue = stack.intake.failures
    alarm = _alarm(stack, "IntakeFailuresAlarm")
    return _graph(
        TITLES[8],
        [queue.metric_approximate_number_of_messages_visible(statistic="Maximum")],
        left_annotations=[alarm.to_annotation()],
    )
