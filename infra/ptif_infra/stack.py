"""The ptif stack: buckets, intake, worker, alarms, and what an operator needs to know."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Fn, Stack
from constructs import Construct

from ptif_infra.alarms import make_alarms
from ptif_infra.dashboard import make_dashboard
from ptif_infra.elastic import make_backlog_publisher
from ptif_infra.intake import make_intake
from ptif_infra.settings import InfraSettings
from ptif_infra.storage import make_buckets
from ptif_infra.worker import CONTAINER, Worker, make_worker


class PtifStack(Stack):
    def __init__(
        self, scope: Construct, construct_id: str, *, settings: InfraSettings, **kwargs: Any
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.settings = settings
        self.buckets = make_buckets(self, settings)
        self.intake = make_intake(self, settings, self.buckets)
        self.worker = make_worker(self, settings, self.buckets)
        self.backlog = (
            make_backlog_publisher(self, settings, self.buckets) if settings.elastic else None
        )
        self.alarms = make_alarms(self, settings, self.intake.failures, self.backlog)
        self.dashboard = make_dashboard(self, self)
        self._outputs()

    def _outputs(self) -> None:
        for name, bucket in (
            ("SourceBucketName", self.buckets.source),
            ("ProcessBucketName", self.buckets.process),
            ("ImagesBucketName", self.buckets.images),
        ):
            CfnOutput(self, name, value=bucket.bucket_name)
        CfnOutput(self, "IntakeFunctionName", value=self.intake.function.function_name)
        CfnOutput(self, "IntakeFailureQueueUrl", value=self.intake.failures.queue_url)
        CfnOutput(self, "ClusterName", value=self.worker.cluster.cluster_name)
        CfnOutput(self, "TaskDefinitionArn", value=self.worker.task.task_definition_arn)
        CfnOutput(self, "RunTaskCommand", value=_run_task_command(self.worker))


def _run_task_command(worker: Worker) -> str:
    """`aws ecs run-task` for a one-off command (`mark --stale`, `reconcile`, `retry`)."""
    network = worker.network
    subnets = network.subnet_ids
    public = "ENABLED" if network.public_ip else "DISABLED"
    configuration = Fn.join(
        "",
        [
            "awsvpcConfiguration={subnets=[",
            Fn.join(",", subnets),
            f"],securityGroups=[{network.security_group.security_group_id}],"
            f"assignPublicIp={public}}}",
        ],
    )
    overrides = '{"containerOverrides":[{"name":"' + CONTAINER + '","command":["mark","--stale"]}]}'
    return Fn.join(
        " ",
        [
            "aws ecs run-task --launch-type FARGATE",
            f"--cluster {worker.cluster.cluster_name}",
            f"--task-definition {worker.task.task_definition_arn}",
            "--network-configuration",
            configuration,
            f"--overrides '{overrides}'",
        ],
    )
