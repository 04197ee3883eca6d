"""The worker: `ptif process` in a Fargate task, started every day by EventBridge Scheduler
(or, with ``alwaysOn``, kept running as an ECS service with ``--follow``).

More tasks on the same queue is how ptif scales out: ``taskCount`` tasks start together and
share the markers through their leases. With ``maxTasks`` above 1 the worker is a ``--follow``
service whose task count the backlog sets, from 0 to ``maxTasks`` (:mod:`ptif_infra.elastic`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from aws_cdk import Duration, IgnoreMode, TimeZone
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_scheduler_targets as targets
from constructs import Construct

from ptif.console import ITEM_LOGGER
from ptif.queue.reports import Outcome
from ptif_infra.alarms import NAMESPACE
from ptif_infra.elastic import Scaling, scale_on_backlog
from ptif_infra.logs import log_group
from ptif_infra.policies import task_statements
from ptif_infra.settings import InfraSettings, store_url
from ptif_infra.storage import Buckets

REPO = Path(__file__).resolve().parents[2]
CONTAINER = "ptif"
#: Seconds each converted image took, from the worker's JSON log line for it (a metric filter:
#: no API call from the task, percentiles in CloudWatch).
CONVERSION_SECONDS = "ConversionSeconds"
#: ECS sends SIGTERM, then SIGKILL after this: ptif finishes or releases the work in hand.
STOP_TIMEOUT = Duration.seconds(120)
_ECR_URI = re.compile(
    r"^(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com/"
    r"(?P<repo>[^:@]+)(?::(?P<tag>[^@]+))?$"
)


@dataclass(frozen=True)
class Network:
    vpc: ec2.IVpc
    subnets: ec2.SubnetSelection
    public_ip: bool
    security_group: ec2.SecurityGroup

    @property
    def subnet_ids(self) -> list[str]:
        if self.subnets.subnets:  # given by id: their zones are not known, nor needed
            return [subnet.subnet_id for subnet in self.subnets.subnets]
        return self.vpc.select_subnets(subnet_type=self.subnets.subnet_type).subnet_ids


@dataclass(frozen=True)
class Worker:
    cluster: ecs.ICluster
    task: ecs.FargateTaskDefinition
    role: iam.Role
    network: Network
    schedule: scheduler.Schedule | None
    service: ecs.FargateService | None
    scaling: Scaling | None = None


def make_worker(scope: Construct, settings: InfraSettings, buckets: Buckets) -> Worker:
    network = _network(scope, settings)
    cluster = _cluster(scope, settings, network.vpc)
    role = _task_role(scope, settings, buckets)
    task = _task_definition(scope, settings, buckets, role)
    if settings.elastic:
        service = _service(scope, settings, cluster, task, network)
        scaling = scale_on_backlog(scope, settings, cluster, service)
        return Worker(cluster, task, role, network, None, service, scaling)
    if settings.always_on:
        service = _service(scope, settings, cluster, task, network)
        return Worker(cluster, task, role, network, None, service)
    schedule = _schedule(scope, settings, cluster, task, network)
    return Worker(cluster, task, role, network, schedule, None)


# network and cluster ---------------------------------------------------------------------------


def _network(scope: Construct, settings: InfraSettings) -> Network:
    if settings.vpc_id:
        vpc = ec2.Vpc.from_lookup(scope, "Vpc", vpc_id=settings.vpc_id)
        public_ip = bool(settings.assign_public_ip)
        subnets = _existing_subnets(scope, settings, public_ip)
    else:
        vpc = _new_vpc(scope)
        # No NAT gateway (about $35 a month each): the task reaches S3 through the gateway
        # endpoint and ECR and CloudWatch Logs through its public IP.
        public_ip = True if settings.assign_public_ip is None else settings.assign_public_ip
        subnets = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PUBLIC)
    security_group = ec2.SecurityGroup(
        scope,
        "WorkerSecurityGroup",
        vpc=vpc,
        description="ptif worker: no inbound; outbound to S3, ECR and CloudWatch Logs",
        allow_all_outbound=True,
    )
    return Network(vpc, subnets, public_ip, security_group)


def _new_vpc(scope: Construct) -> ec2.Vpc:
    return ec2.Vpc(
        scope,
        "Vpc",
        max_azs=2,
        nat_gateways=0,
        subnet_configuration=[
            ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24)
        ],
        gateway_endpoints={
            "S3": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.S3)
        },
    )


def _existing_subnets(
    scope: Construct, settings: InfraSettings, public_ip: bool
) -> ec2.SubnetSelection:
    if settings.subnet_ids:
        subnets = [
            ec2.Subnet.from_subnet_id(scope, f"Subnet{i}", subnet_id)
            for i, subnet_id in enumerate(settings.subnet_ids)
        ]
        return ec2.SubnetSelection(subnets=subnets)
    kind = ec2.SubnetType.PUBLIC if public_ip else ec2.SubnetType.PRIVATE_WITH_EGRESS
    return ec2.SubnetSelection(subnet_type=kind)


def _cluster(scope: Construct, settings: InfraSettings, vpc: ec2.IVpc) -> ecs.ICluster:
    if settings.cluster_name:
        return ecs.Cluster.from_cluster_attributes(
            scope, "Cluster", cluster_name=settings.cluster_name, vpc=vpc
        )
    insights = (
        ecs.ContainerInsights.ENABLED
        if settings.container_insights
        else ecs.ContainerInsights.DISABLED
    )
    return ecs.Cluster(scope, "Cluster", vpc=vpc, container_insights_v2=insights)


# the task --------------------------------------------------------------------------------------


def _task_role(scope: Construct, settings: InfraSettings, buckets: Buckets) -> iam.Role:
    role = iam.Role(
        scope,
        "TaskRole",
        assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com"),
        description="ptif worker: reads sources, works the queue, writes pyramids",
    )
    for statement in task_statements(buckets.source, buckets.process, buckets.images, settings):
        role.add_to_policy(statement)
    return role


def _task_definition(
    scope: Construct, settings: InfraSettings, buckets: Buckets, role: iam.Role
) -> ecs.FargateTaskDefinition:
    task = ecs.FargateTaskDefinition(
        scope,
        "Task",
        cpu=settings.task_cpu,
        memory_limit_mib=settings.task_memory_mib,
        ephemeral_storage_gib=settings.ephemeral_storage_gib,
        runtime_platform=ecs.RuntimePlatform(
            cpu_architecture=_architecture(settings),
            operating_system_family=ecs.OperatingSystemFamily.LINUX,
        ),
        task_role=role,
    )
    group = log_group(scope, "WorkerLogs", settings.log_retention_days)
    _conversion_seconds(group)
    task.add_container(
        CONTAINER,
        image=_image(scope, settings),
        command=["process", "--follow"] if follows(settings) else ["process"],
        environment=task_environment(settings, buckets),
        logging=ecs.LogDrivers.aws_logs(
            stream_prefix="ptif",
            log_group=group,
        ),
        stop_timeout=STOP_TIMEOUT,
        essential=True,
    )
    return task


def _conversion_seconds(group: logs.LogGroup) -> logs.MetricFilter:
    """``ConversionSeconds`` from each ``converted`` item line that ``ptif process`` logs."""
    return group.add_metric_filter(
        "ConversionSecondsFilter",
        filter_pattern=logs.FilterPattern.all(
            logs.FilterPattern.string_value("$.logger", "=", ITEM_LOGGER),
            logs.FilterPattern.string_value("$.outcome", "=", Outcome.CONVERTED.value),
        ),
        metric_namespace=NAMESPACE,
        metric_name=CONVERSION_SECONDS,
        metric_value="$.seconds",
        unit=cloudwatch.Unit.SECONDS,
    )


def follows(settings: InfraSettings) -> bool:
    """A service's task keeps polling the queue; the daily run's ends when it is done."""
    return settings.always_on or settings.elastic


def task_environment(settings: InfraSettings, buckets: Buckets) -> dict[str, str]:
    environment = {
        "PTIF_SOURCE": store_url(buckets.source.bucket_name, settings.source_prefix),
        "PTIF_PROCESS": store_url(buckets.process.bucket_name, settings.process_prefix),
        "PTIF_IMAGES": store_url(buckets.images.bucket_name, settings.images_prefix),
        "PTIF_QUEUE_PREFIX": settings.queue_prefix,
        "PTIF_MIN_AGE": f"{settings.min_age:g}",
        **settings.recipe_environment(),
    }
    if settings.workers:
        environment["PTIF_WORKERS"] = str(settings.workers)
    if settings.extensions:
        environment["PTIF_EXTENSIONS"] = settings.extensions
    return environment


def _architecture(settings: InfraSettings) -> ecs.CpuArchitecture:
    arm = settings.cpu_architecture == "arm64"
    return ecs.CpuArchitecture.ARM64 if arm else ecs.CpuArchitecture.X86_64


def _image(scope: Construct, settings: InfraSettings) -> ecs.ContainerImage:
    """A pre-built image (``imageUri``), else the repository's Dockerfile, built by
    ``cdk deploy`` (synth only fingerprints the build context; it needs no Docker)."""
    if not settings.image_uri:
        arm = settings.cpu_architecture == "arm64"
        return ecs.ContainerImage.from_asset(
            str(REPO),
            file="Dockerfile",
            platform=ecr_assets.Platform.LINUX_ARM64 if arm else ecr_assets.Platform.LINUX_AMD64,
            ignore_mode=IgnoreMode.DOCKER,
        )
    match = _ECR_URI.match(settings.image_uri)
    if not match:
        return ecs.ContainerImage.from_registry(settings.image_uri)
    repository = ecr.Repository.from_repository_attributes(
        scope,
        "ImageRepository",
        repository_name=match["repo"],
        repository_arn=f"arn:aws:ecr:{match['region']}:{match['account']}:repository/{match['repo']}",
    )
    return ecs.ContainerImage.from_ecr_repository(repository, match["tag"] or "latest")


# how it runs -----------------------------------------------------------------------------------


def _schedule(
    scope: Construct,
    settings: InfraSettings,
    cluster: ecs.ICluster,
    task: ecs.FargateTaskDefinition,
    network: Network,
) -> scheduler.Schedule:
    target = targets.EcsRunFargateTask(
        cluster,
        task_definition=task,
        task_count=settings.task_count,
        vpc_subnets=network.subnets,
        security_groups=[network.security_group],
        assign_public_ip=network.public_ip,
        retry_attempts=settings.schedule_retries,
        max_event_age=Duration.hours(1),
    )
    return scheduler.Schedule(
        scope,
        "DailyRun",
        description="ptif: the daily `ptif process` run",
        schedule=scheduler.ScheduleExpression.expression(
            settings.schedule, TimeZone.of(settings.schedule_time_zone)
        ),
        target=target,
    )


def _service(
    scope: Construct,
    settings: InfraSettings,
    cluster: ecs.ICluster,
    task: ecs.FargateTaskDefinition,
    network: Network,
) -> ecs.FargateService:
    return ecs.FargateService(
        scope,
        "Service",
        cluster=cluster,
        task_definition=task,
        # Elastic: Application Auto Scaling sets the count; it starts at the minimum.
        desired_count=settings.task_count if settings.always_on else 0,
        vpc_subnets=network.subnets,
        security_groups=[network.security_group],
        assign_public_ip=network.public_ip,
        min_healthy_percent=100,
        max_healthy_percent=200,
        circuit_breaker=ecs.DeploymentCircuitBreaker(rollback=True),
    )
