"""The CDK app in infra/, synthesised twice: everything new, and everything existing.

Each synth runs once per test run (it takes several seconds) and cdk-nag's AwsSolutions rules
run inside it: a finding nobody acknowledged fails the synth, so the fixtures themselves are
the first check. The tests then read the CloudFormation template and the validation report.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# jsii warns loudly on every start under a Node.js release it no longer supports (20 here).
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "18,20")
os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")

if os.environ.get("CI"):
    import aws_cdk  # noqa: F401  (CI installs the infra group: a missing one must fail)
else:
    pytest.importorskip("aws_cdk", reason="the infra dependency group is not installed")

from aws_cdk.assertions import Match, Template

from ptif.config import RECIPE_ENVIRONMENT
from ptif.config import load_settings as ptif_settings
from ptif.convert.profiles import PROFILES
from ptif.queue import layout
from ptif.stores.overlap import overlap

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "infra"))

from ptif_infra.application import build_app  # noqa: E402
from ptif_infra.settings import SettingsError, environment_name, load_settings  # noqa: E402
from ptif_infra.stack import PtifStack  # noqa: E402

ACCOUNT = {"CDK_DEFAULT_ACCOUNT": "123456789012", "CDK_DEFAULT_REGION": "us-east-1"}
EXISTING = {
    "sourceBucket": "rbsc-scans",
    "processBucket": "rbsc-process",
    "imagesBucket": "rbsc-iiif",
    "sourcePrefix": "incoming/",
    "processPrefix": "ptif/",
    "notificationSuffixes": ".tif,.jpg",
    "vpcId": "vpc-0123456789abcdef0",
    "subnetIds": "subnet-0aaa1111,subnet-0bbb2222",
    "clusterName": "digital-library",
    "alwaysOn": "true",
    "imageUri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/ptif:1.2.3",
    "alarmEmail": "ops@example.org",
    "taskCount": "3",
    "workers": "4",
    "minAge": "300",
    "compression": "deflate",
    "tileSize": "512",
    "dpi": "400",
}
CREATED_EVENTS = [
    "s3:ObjectCreated:Put",
    "s3:ObjectCreated:Post",
    "s3:ObjectCreated:Copy",
    "s3:ObjectCreated:CompleteMultipartUpload",
]
PROCESS_FOLDERS = ["rbsc/", "claims/", "failed/", "pages/", "reports/", "watch/", "ptif-check/"]
#: What ptif's task does in each folder of the process store.
PROCESS_ACTIONS = ("s3:GetObject", "s3:PutObject", "s3:DeleteObject")


@dataclass(frozen=True)
class Synth:
    stack: PtifStack
    template: Template
    outdir: Path

    @property
    def json(self) -> dict[str, Any]:
        return self.template.to_json()  # type: ignore[no-any-return]

    def validation_report(self) -> dict[str, Any]:
        report: dict[str, Any] = json.loads((self.outdir / "validation-report.json").read_text())
        return report

    def logical_id(self, construct: Any) -> str:
        return str(self.stack.resolve(self.stack.get_logical_id(construct.node.default_child)))

    def statements(self, role: Any) -> list[dict[str, Any]]:
        """The statements of every AWS::IAM::Policy attached to ``role``."""
        ref = {"Ref": self.logical_id(role)}
        policies = self.template.find_resources("AWS::IAM::Policy")
        return [
            statement
            for policy in policies.values()
            if ref in policy["Properties"].get("Roles", [])
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        ]


def _synth(context: dict[str, Any], outdir: Path) -> Synth:
    _, stack = build_app(context, outdir=str(outdir), environ=ACCOUNT)
    return Synth(stack, Template.from_stack(stack), outdir)


@pytest.fixture(scope="module")
def new(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    """Buckets, VPC and cluster created by the stack; the daily schedule."""
    return _synth({}, tmp_path_factory.mktemp("cdk-new"))


@pytest.fixture(scope="module")
def existing(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    """Existing buckets (with prefixes), VPC, subnets and cluster; an always-on service."""
    return _synth(EXISTING, tmp_path_factory.mktemp("cdk-existing"))


@pytest.fixture(scope="module")
def elastic(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    """Created buckets, VPC and cluster; a service the backlog sizes from 0 to 10 tasks."""
    return _synth({"maxTasks": "10"}, tmp_path_factory.mktemp("cdk-elastic"))


@pytest.fixture(params=["new", "existing"])
def each(request: pytest.FixtureRequest) -> Synth:
    synth: Synth = request.getfixturevalue(request.param)
    return synth


def text(value: Any) -> str:
    """A resolved CloudFormation value as readable text: ``${ProcessBucket.Arn}/rbsc/*``."""
    if isinstance(value, str):
        return value
    if "Fn::Join" in value:
        delimiter, parts = value["Fn::Join"]
        return str(delimiter).join(text(part) for part in parts)
    if "Fn::GetAtt" in value:
        return "${" + ".".join(value["Fn::GetAtt"]) + "}"
    if "Ref" in value:
        return "${" + value["Ref"] + "}"
    raise AssertionError(f"unexpected value {value!r}")


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def grants(statements: list[dict[str, Any]]) -> set[tuple[str, str]]:
    """Every (action, resource) pair the statements allow."""
    return {
        (action, text(resource))
        for statement in statements
        if statement["Effect"] == "Allow"
        for action in as_list(statement["Action"])
        for resource in as_list(statement["Resource"])
    }


def s3_grants(statements: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(a, r) for a, r in grants(statements) if a.startswith("s3:")}


def all_policy_statements(template: Template) -> Iterator[dict[str, Any]]:
    for policy in template.find_resources("AWS::IAM::Policy").values():
        yield from policy["Properties"]["PolicyDocument"]["Statement"]
    for role in template.find_resources("AWS::IAM::Role").values():
        for inline in role["Properties"].get("Policies", []):
            yield from inline["PolicyDocument"]["Statement"]


# intake ----------------------------------------------------------------------------------------


def notification_configurations(synth: Synth) -> list[dict[str, Any]]:
    resources = synth.template.find_resources("Custom::S3BucketNotifications")
    assert len(resources) == 1
    (resource,) = resources.values()
    configuration = resource["Properties"]["NotificationConfiguration"]
    assert set(configuration) == {"LambdaFunctionConfigurations"}
    configurations: list[dict[str, Any]] = configuration["LambdaFunctionConfigurations"]
    return configurations


def test_every_way_of_creating_an_object_notifies_the_intake_function(new: Synth) -> None:
    configurations = notification_configurations(new)
    intake = {"Fn::GetAtt": [new.logical_id(new.stack.intake.function), "Arn"]}
    assert sorted(e for c in configurations for e in c["Events"]) == sorted(CREATED_EVENTS)
    assert all(c["LambdaFunctionArn"] == intake for c in configurations)
    assert all("Filter" not in c for c in configurations)
    new.template.has_resource_properties(
        "Custom::S3BucketNotifications",
        {"BucketName": {"Ref": new.logical_id(new.stack.buckets.source)}, "Managed": True},
    )


def test_existing_bucket_notifications_use_the_prefix_and_each_suffix(existing: Synth) -> None:
    configurations = notification_configurations(existing)
    rules = {
        (event, tuple(sorted((r["Name"], r["Value"]) for r in c["Filter"]["Key"]["FilterRules"])))
        for c in configurations
        for event in c["Events"]
    }
    expected = {
        (event, (("prefix", "incoming/"), ("suffix", suffix)))
        for event in CREATED_EVENTS
        for suffix in (".tif", ".jpg")
    }
    assert rules == expected
    # An imported bucket keeps the notifications that other tools set on it.
    existing.template.has_resource_properties(
        "Custom::S3BucketNotifications", {"BucketName": "rbsc-scans", "Managed": False}
    )


def test_intake_function_runs_the_handler_and_parks_failures(new: Synth) -> None:
    failures = new.logical_id(new.stack.intake.failures)
    new.template.has_resource_properties(
        "AWS::Lambda::Function",
        {
            "Handler": "ptif.aws.handler",
            "Runtime": Match.string_like_regexp(r"^python3\.1[12]$"),
            "Environment": {
                "Variables": {
                    "PTIF_SOURCE": {"Fn::Join": ["", ["s3://", {"Ref": Match.any_value()}]]},
                    "PTIF_PROCESS": {"Fn::Join": ["", ["s3://", {"Ref": Match.any_value()}]]},
                    "PTIF_QUEUE_PREFIX": "rbsc/",
                }
            },
        },
    )
    new.template.has_resource_properties(
        "AWS::Lambda::EventInvokeConfig",
        {
            "MaximumRetryAttempts": 2,
            "DestinationConfig": {"OnFailure": {"Destination": {"Fn::GetAtt": [failures, "Arn"]}}},
        },
    )
    new.template.has_resource_properties(
        "AWS::SQS::Queue", {"SqsManagedSseEnabled": True, "MessageRetentionPeriod": 1209600}
    )


def test_an_sqs_event_source_would_report_each_failed_message(each: Synth) -> None:
    """S3 invokes the intake directly (a failed record fails the invocation: retries, then the
    on-failure queue above). Should a queue ever feed it, the mapping must let the handler's
    batchItemFailures through, or one bad record would send its whole batch round again."""
    mappings = each.template.find_resources("AWS::Lambda::EventSourceMapping")
    assert [
        m for m in mappings.values()
        if m["Properties"].get("FunctionResponseTypes") != ["ReportBatchItemFailures"]
    ] == []  # fmt: skip


def test_existing_stores_reach_the_function_with_their_prefixes(existing: Synth) -> None:
    existing.template.has_resource_properties(
        "AWS::Lambda::Function",
        {
            "Handler": "ptif.aws.handler",
            "Environment": {
                "Variables": {
                    "PTIF_SOURCE": "s3://rbsc-scans/incoming",
                    "PTIF_PROCESS": "s3://rbsc-process/ptif",
                    "PTIF_QUEUE_PREFIX": "rbsc/",
                }
            },
        },
    )


def assets(synth: Synth, kind: str) -> dict[str, Any]:
    manifest = json.loads((synth.outdir / f"{synth.stack.stack_name}.assets.json").read_text())
    found: dict[str, Any] = manifest[kind]
    return found


def function_asset(synth: Synth) -> Path:
    """The folder staged as the intake function's code (its zip is named by its hash)."""
    (function,) = synth.template.find_resources(
        "AWS::Lambda::Function", {"Properties": {"Handler": "ptif.aws.handler"}}
    ).values()
    digest = function["Properties"]["Code"]["S3Key"].removesuffix(".zip")
    return synth.outdir / assets(synth, "files")[digest]["source"]["path"]


def test_function_code_is_ptif_alone_and_loads_without_pyvips(new: Synth) -> None:
    asset = function_asset(new)
    files = {p.relative_to(asset).as_posix() for p in asset.rglob("*") if p.is_file()}
    assert "ptif/aws.py" in files
    assert all(f.startswith("ptif/") and f.endswith((".py", ".typed")) for f in files), files
    block_pyvips = (
        "import sys; sys.modules['pyvips'] = None; "
        f"sys.path.insert(0, {str(asset)!r}); import ptif.aws; "
        "assert ptif.aws.__file__.startswith(sys.path[0]), ptif.aws.__file__; "
        "assert callable(ptif.aws.handler)"
    )
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", block_pyvips], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr


# worker ----------------------------------------------------------------------------------------


def test_daily_run_is_half_past_five_in_new_york_with_retries(new: Synth) -> None:
    task = new.logical_id(new.stack.worker.task)
    new.template.resource_count_is("AWS::Scheduler::Schedule", 1)
    new.template.has_resource_properties(
        "AWS::Scheduler::Schedule",
        {
            "ScheduleExpression": "cron(30 5 * * ? *)",
            "ScheduleExpressionTimezone": "America/New_York",
            "State": "ENABLED",
            "Target": {
                "Arn": {"Fn::GetAtt": [Match.any_value(), "Arn"]},
                "RetryPolicy": {"MaximumRetryAttempts": 3, "MaximumEventAgeInSeconds": 3600},
                "EcsParameters": {
                    "LaunchType": "FARGATE",
                    "TaskCount": 1,
                    "TaskDefinitionArn": {"Ref": task},
                    "NetworkConfiguration": {
                        "AwsvpcConfiguration": Match.object_like({"AssignPublicIp": "ENABLED"})
                    },
                },
            },
        },
    )
    new.template.resource_count_is("AWS::ECS::Service", 0)


def test_scheduler_may_only_start_the_task(new: Synth) -> None:
    (schedule,) = new.template.find_resources("AWS::Scheduler::Schedule").values()
    role = schedule["Properties"]["Target"]["RoleArn"]["Fn::GetAtt"][0]
    policies = new.template.find_resources(
        "AWS::IAM::Policy", {"Properties": {"Roles": [{"Ref": role}]}}
    )
    statements = [
        s for p in policies.values() for s in p["Properties"]["PolicyDocument"]["Statement"]
    ]
    task = new.logical_id(new.stack.worker.task)
    roles = {
        "${" + new.logical_id(new.stack.worker.role) + ".Arn}",
        "${" + new.logical_id(new.stack.worker.task.execution_role) + ".Arn}",
    }
    assert grants(statements) == {("ecs:RunTask", "${" + task + "}")} | {
        ("iam:PassRole", r) for r in roles
    }


def test_task_definition_sizes_logs_and_stop_timeout(new: Synth) -> None:
    logs = new.template.find_resources("AWS::Logs::LogGroup")
    assert {g["Properties"]["RetentionInDays"] for g in logs.values()} == {90}
    new.template.has_resource_properties(
        "AWS::ECS::TaskDefinition",
        {
            "Cpu": "2048",
            "Memory": "8192",
            "EphemeralStorage": {"SizeInGiB": 50},
            "RequiresCompatibilities": ["FARGATE"],
            "ContainerDefinitions": [
                Match.object_like(
                    {
                        "Name": "ptif",
                        "Command": ["process"],
                        "StopTimeout": 120,
                        "Essential": True,
                        "LogConfiguration": {
                            "LogDriver": "awslogs",
                            "Options": Match.object_like(
                                {"awslogs-group": {"Ref": Match.any_value()}}
                            ),
                        },
                        "Environment": Match.array_with(
                            [
                                {"Name": "PTIF_QUEUE_PREFIX", "Value": "rbsc/"},
                                {"Name": "PTIF_PROFILE", "Value": "default"},
                            ]
                        ),
                    }
                )
            ],
        },
    )


def test_task_image_is_built_from_the_dockerfile_without_docker_at_synth(new: Synth) -> None:
    (image,) = assets(new, "dockerImages").values()
    assert image["source"]["dockerFile"] == "Dockerfile"
    context = new.outdir / image["source"]["directory"]
    files = {p.relative_to(context).as_posix() for p in context.rglob("*") if p.is_file()}
    assert {"Dockerfile", "pyproject.toml", "uv.lock", "scripts/smoke-test.py"} <= files
    assert "src/ptif/queue/worker.py" in files
    assert not [f for f in files if f.startswith((".venv", ".git/", "tests/", "infra/"))]


def test_always_on_service_follows_the_queue_with_more_tasks(existing: Synth) -> None:
    existing.template.resource_count_is("AWS::Scheduler::Schedule", 0)
    existing.template.has_resource_properties(
        "AWS::ECS::Service",
        {
            "Cluster": "digital-library",
            "DesiredCount": 3,
            "LaunchType": "FARGATE",
            "NetworkConfiguration": {
                "AwsvpcConfiguration": Match.object_like(
                    {
                        "Subnets": ["subnet-0aaa1111", "subnet-0bbb2222"],
                        "AssignPublicIp": "DISABLED",
                    }
                )
            },
        },
    )
    existing.template.has_resource_properties(
        "AWS::ECS::TaskDefinition",
        {
            "ContainerDefinitions": [
                Match.object_like(
                    {
                        "Command": ["process", "--follow"],
                        "Environment": Match.array_with(
                            [
                                {"Name": "PTIF_SOURCE", "Value": "s3://rbsc-scans/incoming"},
                                {"Name": "PTIF_PROCESS", "Value": "s3://rbsc-process/ptif"},
                                {"Name": "PTIF_IMAGES", "Value": "s3://rbsc-iiif"},
                                {"Name": "PTIF_MIN_AGE", "Value": "300"},
                                {"Name": "PTIF_WORKERS", "Value": "4"},
                            ]
                        ),
                    }
                )
            ]
        },
    )
    (task,) = existing.template.find_resources("AWS::ECS::TaskDefinition").values()
    (container,) = task["Properties"]["ContainerDefinitions"]
    image = "123456789012.dkr.ecr.us-east-1.${AWS::URLSuffix}/ptif:1.2.3"
    assert text(container["Image"]) == image
    existing.template.resource_count_is("AWS::ECS::Cluster", 0)
    existing.template.resource_count_is("AWS::EC2::VPC", 0)


# permissions -----------------------------------------------------------------------------------


def test_no_policy_grants_all_of_s3_or_s3_on_everything(each: Synth) -> None:
    checked = 0
    for statement in all_policy_statements(each.template):
        actions = as_list(statement["Action"])
        assert not [a for a in actions if a in ("*", "s3:*") or a.startswith("s3:*")], statement
        if any(a.startswith("s3:") for a in actions):
            checked += 1
            assert "*" not in as_list(statement["Resource"]), statement
        if "*" in as_list(statement["Resource"]):  # the one action with no resource-level form
            assert actions == ["ecr:GetAuthorizationToken"], statement
    assert checked >= 8


def test_intake_may_only_write_markers(new: Synth, existing: Synth) -> None:
    process = "${" + new.logical_id(new.stack.buckets.process) + ".Arn}"
    assert s3_grants(new.statements(new.stack.intake.role)) == {
        ("s3:GetObject", f"{process}/rbsc/*"),
        ("s3:PutObject", f"{process}/rbsc/*"),
        ("s3:ListBucket", process),
    }
    bucket = "arn:${AWS::Partition}:s3:::rbsc-process"
    assert s3_grants(existing.statements(existing.stack.intake.role)) == {
        ("s3:GetObject", f"{bucket}/ptif/rbsc/*"),
        ("s3:PutObject", f"{bucket}/ptif/rbsc/*"),
        ("s3:ListBucket", bucket),
    }
    other = {a for a, _ in grants(new.statements(new.stack.intake.role)) if not a.startswith("s3:")}
    assert other == {
        "logs:CreateLogStream",
        "logs:PutLogEvents",
        "sqs:SendMessage",
        "sqs:GetQueueAttributes",
        "sqs:GetQueueUrl",
    }


def layout_folders() -> set[str]:
    """Every folder at the top of the process store that ptif.queue.layout names, found from
    its constants (``…_PREFIX``) rather than from its FOLDERS, so that a folder added to the
    layout and not granted fails the tests below."""
    return {
        value
        for name, value in vars(layout).items()
        if name.endswith("_PREFIX") and isinstance(value, str) and value.endswith("/")
    }


def process_store(synth: Synth) -> tuple[str, str]:
    """The process bucket's ARN, and the ARN prefix of its store's objects."""
    bucket = text(synth.stack.resolve(synth.stack.buckets.process.bucket_arn))
    return bucket, f"{bucket}/{synth.stack.settings.process_prefix}"


def test_task_may_use_every_folder_of_the_process_store_layout(each: Synth) -> None:
    _, store = process_store(each)
    granted = s3_grants(each.statements(each.stack.worker.role))
    folders = layout_folders()
    assert each.stack.settings.queue_prefix == layout.DEFAULT_QUEUE_PREFIX
    assert {layout.FAILED_PREFIX, layout.CLAIMS_PREFIX} < folders
    for folder in folders:
        for action in PROCESS_ACTIONS:
            assert (action, f"{store}{folder}*") in granted, (action, folder)
    under_store = {r.removeprefix(store) for _, r in granted if r.startswith(store)}
    assert under_store == {f"{folder}*" for folder in folders}


def test_intake_may_write_markers_in_the_queue_and_nowhere_else(each: Synth) -> None:
    bucket, store = process_store(each)
    queue = f"{store}{each.stack.settings.queue_prefix}*"
    assert s3_grants(each.statements(each.stack.intake.role)) == {
        ("s3:GetObject", queue),
        ("s3:PutObject", queue),
        ("s3:ListBucket", bucket),
    }
    others = layout_folders() - {each.stack.settings.queue_prefix}
    assert others and not any(queue.startswith(f"{store}{folder}") for folder in others)


def expected_task_grants(source: str, process: str, images: str) -> set[tuple[str, str]]:
    """``source`` etc.: the bucket ARN and the store prefix, joined: ``arn…:::b/incoming/``."""
    buckets = {b.split("/", 1)[0] if "/" in b else b for b in (source, process, images)}
    object_rules = {("s3:GetObject", f"{source}*")}
    for folder in PROCESS_FOLDERS:
        for action in PROCESS_ACTIONS:
            object_rules.add((action, f"{process}{folder}*"))
    for action in ("s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"):
        object_rules.add((action, f"{images}*"))
    return object_rules | {("s3:ListBucket", b.rstrip("/")) for b in buckets}


def test_task_reads_sources_works_the_queue_and_writes_images(new: Synth, existing: Synth) -> None:
    def arn(bucket: Any) -> str:
        return "${" + new.logical_id(bucket) + ".Arn}/"

    buckets = new.stack.buckets
    assert s3_grants(new.statements(new.stack.worker.role)) == expected_task_grants(
        arn(buckets.source), arn(buckets.process), arn(buckets.images)
    )
    prefix = "arn:${AWS::Partition}:s3:::"
    assert s3_grants(existing.statements(existing.stack.worker.role)) == expected_task_grants(
        f"{prefix}rbsc-scans/incoming/", f"{prefix}rbsc-process/ptif/", f"{prefix}rbsc-iiif/"
    )


def test_notification_handler_may_only_configure_the_source_bucket(each: Synth) -> None:
    statements = each.statements(each.stack.buckets.notifications_role)
    s3_actions = s3_grants(statements)
    source = {text(each.stack.resolve(each.stack.buckets.source.bucket_arn))}
    assert {a for a, _ in s3_actions} == {"s3:GetBucketNotification", "s3:PutBucketNotification"}
    assert {r for _, r in s3_actions} == source


# buckets ---------------------------------------------------------------------------------------


def test_created_buckets_are_private_encrypted_tls_only_and_tidy(new: Synth) -> None:
    buckets = new.template.find_resources("AWS::S3::Bucket")
    assert len(buckets) == 3
    for bucket in buckets.values():
        properties = bucket["Properties"]
        assert properties["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True,
            "BlockPublicPolicy": True,
            "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True,
        }
        (rule,) = properties["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        assert rule["ServerSideEncryptionByDefault"] == {"SSEAlgorithm": "AES256"}
        rules = properties["LifecycleConfiguration"]["Rules"]
        aborts = [r.get("AbortIncompleteMultipartUpload") for r in rules]
        assert {"DaysAfterInitiation": 1} in aborts
        assert bucket["DeletionPolicy"] == "Retain"
    policies = new.template.find_resources("AWS::S3::BucketPolicy")
    secured = {text(p["Properties"]["Bucket"]) for p in policies.values() if _denies_plain_http(p)}
    assert secured == {"${" + name + "}" for name in buckets}


def _denies_plain_http(policy: dict[str, Any]) -> bool:
    return any(
        s["Effect"] == "Deny"
        and s["Action"] == "s3:*"
        and s["Principal"] == {"AWS": "*"}
        and s.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}
        for s in policy["Properties"]["PolicyDocument"]["Statement"]
    )


def test_existing_buckets_are_left_as_they_are(existing: Synth) -> None:
    existing.template.resource_count_is("AWS::S3::Bucket", 0)
    existing.template.resource_count_is("AWS::S3::BucketPolicy", 0)


# alarms ----------------------------------------------------------------------------------------


def ptif_alarm(synth: Synth, metric: str) -> dict[str, Any]:
    alarms = synth.template.find_resources(
        "AWS::CloudWatch::Alarm",
        {"Properties": {"Namespace": "ptif", "MetricName": metric}},
    )
    assert len(alarms) == 1, f"{metric}: {len(alarms)} alarms"
    (alarm,) = alarms.values()
    assert alarm["Properties"]["Dimensions"] == [{"Name": "Stage", "Value": "process"}]
    properties: dict[str, Any] = alarm["Properties"]
    return properties


def test_alarms_on_failed_images_and_a_queue_that_falls_behind(new: Synth) -> None:
    failed = ptif_alarm(new, "Failed")
    assert (failed["Statistic"], failed["ComparisonOperator"], failed["Threshold"]) == (
        "Sum",
        "GreaterThanThreshold",
        0,
    )
    oldest = ptif_alarm(new, "OldestPendingAgeSeconds")
    assert (oldest["Statistic"], oldest["ComparisonOperator"], oldest["Threshold"]) == (
        "Maximum",
        "GreaterThanThreshold",
        93600,
    )
    missing = ptif_alarm(new, "Processed")
    assert missing["TreatMissingData"] == "breaching"
    new.template.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {"Namespace": "AWS/SQS", "MetricName": "ApproximateNumberOfMessagesVisible"},
    )
    alarms = new.template.find_resources("AWS::CloudWatch::Alarm").values()
    assert not [a for a in alarms if "AlarmActions" in a["Properties"]]


def test_alarms_notify_the_topic_when_one_is_configured(existing: Synth) -> None:
    existing.template.has_resource_properties(
        "AWS::SNS::Subscription", {"Protocol": "email", "Endpoint": "ops@example.org"}
    )
    (topic,) = existing.template.find_resources("AWS::SNS::Topic")
    alarms = existing.template.find_resources("AWS::CloudWatch::Alarm").values()
    assert len(alarms) == 3  # an always-on service reports only when it stops: no RunMissing
    assert all(a["Properties"]["AlarmActions"] == [{"Ref": topic}] for a in alarms)


# cdk-nag ---------------------------------------------------------------------------------------

#: The findings acknowledged on purpose (ptif_infra/nag.py gives each one's reason).
ACCEPTED = [
    r"AwsSolutions-IAM5\[Resource::(<\w+\.Arn>|arn:<AWS::Partition>:s3:::[\w.-]+)/[\w/-]*\*\]",
    r"AwsSolutions-IAM5\[Resource::arn:<AWS::Partition>:logs:[^*]+:log-group:/aws/lambda/\S+\*\]",
    r"AwsSolutions-(S1|SQS3|L1|VPC7|ECS2)",
]


def test_cdk_nag_passes_with_only_reasoned_acknowledgements(each: Synth) -> None:
    (report,) = [
        r for r in each.validation_report()["pluginReports"] if r["pluginName"] == "AwsSolutions"
    ]
    assert report["conclusion"] == "success"
    assert report["violations"] == []
    accepted = report["suppressedViolations"]
    assert accepted, "cdk-nag found nothing to acknowledge: did it run?"
    for finding in accepted:
        rule = finding["ruleName"]
        wildcard_token = rule == "AwsSolutions-IAM5[Resource::*]"
        paths = [c["constructPath"] for c in finding["violatingConstructs"]]
        if wildcard_token:  # ecr:GetAuthorizationToken, on the task's execution role only
            assert paths == [f"{each.stack.stack_name}/Task/ExecutionRole/DefaultPolicy/Resource"]
        else:
            assert any(re.fullmatch(p, rule) for p in ACCEPTED), rule
        assert len(finding["reason"]) > 40, finding


# settings --------------------------------------------------------------------------------------


def test_settings_come_from_context_then_environment_then_defaults() -> None:
    context = {"taskCount": 4}
    environ = {"PTIF_CDK_TASK_COUNT": "2", "PTIF_CDK_SOURCE_BUCKET": "scans"}
    settings = load_settings(context.get, environ)
    assert (settings.task_count, settings.source_bucket) == (4, "scans")
    assert settings.schedule == "cron(30 5 * * ? *)"
    assert environment_name("ephemeralStorageGiB") == "PTIF_CDK_EPHEMERAL_STORAGE_GIB"
    disk = load_settings({}.get, {"PTIF_CDK_EPHEMERAL_STORAGE_GIB": "100"}).ephemeral_storage_gib
    assert disk == 100


def _recipe_hashes(variables: dict[str, Any], empty: Path) -> set[str]:
    """The recipes ptif resolves from a part's environment (its profile and settings)."""
    names = {"PTIF_PROFILE", *RECIPE_ENVIRONMENT.values()}
    given = {k: v for k, v in variables.items() if k in names}
    return ptif_settings(environ=given, config_file=empty).conversion_profile().recipe_hashes()


def test_the_function_and_the_task_resolve_one_recipe(each: Synth, tmp_path: Path) -> None:
    empty = tmp_path / "ptif.toml"
    empty.write_text("")
    (function,) = [
        f["Properties"]
        for f in each.template.find_resources("AWS::Lambda::Function").values()
        if f["Properties"].get("Handler") == "ptif.aws.handler"
    ]
    (task,) = each.template.find_resources("AWS::ECS::TaskDefinition").values()
    (container,) = task["Properties"]["ContainerDefinitions"]
    task_env = {v["Name"]: v["Value"] for v in container["Environment"]}
    hashes = _recipe_hashes(task_env, empty)
    assert _recipe_hashes(function["Environment"]["Variables"], empty) == hashes
    if task_env.get("PTIF_COMPRESSION"):  # the existing buckets' deployment sets some
        wanted = PROFILES["default"].recipe.replace(compression="deflate", tile_size=512, dpi=400)
        assert hashes == {wanted.hash}


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("compression", "gif", "conversion settings: unknown compression 'gif'"),
        ("tileSize", "100", "conversion settings: tile size 100 must be a multiple of 16"),
        ("quality", "high", "quality"),
        ("profile", "glossy", "conversion settings: .*glossy"),
    ],
)
def test_bad_conversion_settings_are_refused_at_synth(key: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings({key: value}.get, {})


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("taskCount", "11", "taskCount"),
        ("ephemeralStorageGiB", "10", "ephemeralStorageGiB"),
        ("queuePrefix", "rbsc", "queuePrefix"),
        ("queuePrefix", "reports/", "queuePrefix: .* overlaps .* reports/ folder"),
        ("alwaysOn", "maybe", "alwaysOn"),
        ("subnetIds", "subnet-1", "vpcId"),
        ("logRetentionDays", "100", "logRetentionDays"),
        ("maxTasks", "0", "maxTasks must be 1 to 100"),
        ("maxTasks", "101", "maxTasks must be 1 to 100"),
        ("backlogPerTask", "0", "backlogPerTask"),
    ],
)
def test_bad_settings_are_refused_by_name(key: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings({key: value}.get, {})


@pytest.mark.parametrize(
    "buckets",
    [
        {"sourceBucket": "scans", "imagesBucket": "scans"},
        {"sourceBucket": "scans", "sourcePrefix": "incoming/", "processBucket": "scans"},
        {"processBucket": "work", "imagesBucket": "work", "imagesPrefix": "ptif/iiif/"},
    ],
)
def test_overlapping_buckets_fail_the_synth_with_ptifs_message(
    buckets: dict[str, str], tmp_path: Path
) -> None:
    """The CLI's rule and message: `cdk synth` prints one line and fails."""
    urls = {
        role: f"s3://{buckets[f'{role}Bucket']}/{buckets.get(f'{role}Prefix', '')}".rstrip("/")
        for role in ("source", "process", "images")
        if f"{role}Bucket" in buckets
    }
    origins = {
        role: ", ".join(f"context {k}" for k in buckets if k.startswith(role)) for role in urls
    }
    expected = overlap(urls, origins)
    assert expected is not None
    with pytest.raises(SettingsError) as caught:
        build_app(buckets, outdir=str(tmp_path / "in-process"), environ=ACCOUNT)
    assert str(caught.value) == expected
    env = {**os.environ, **ACCOUNT, "CDK_CONTEXT_JSON": json.dumps(buckets)}
    env["CDK_OUTDIR"] = str(tmp_path / "cdk.out")
    done = subprocess.run(
        [sys.executable, str(REPO / "infra" / "app.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines()[-1] == f"ptif: {expected}"
    assert not (tmp_path / "cdk.out" / "manifest.json").exists()


def test_buckets_apart_by_prefix_are_accepted() -> None:
    context = {
        "sourceBucket": "archive",
        "sourcePrefix": "scans/",
        "processBucket": "archive",
        "processPrefix": "scans-queue/",
        "imagesBucket": "archive",
        "imagesPrefix": "iiif/",
    }
    settings = load_settings(context.get, {"PTIF_CDK_SOURCE_BUCKET": "ignored"})
    assert settings.source_prefix == "scans/"


# elastic mode and the dashboard ------------------------------------------------------------------


def one(synth: Synth, kind: str) -> tuple[str, dict[str, Any]]:
    found = synth.template.find_resources(kind)
    assert len(found) == 1, sorted(found)
    logical, resource = next(iter(found.items()))
    return logical, resource["Properties"]


def alarm_named(synth: Synth, logical_prefix: str) -> dict[str, Any]:
    alarms = synth.template.find_resources("AWS::CloudWatch::Alarm")
    (props,) = [a["Properties"] for k, a in alarms.items() if k.startswith(logical_prefix)]
    return props


def test_elastic_service_follows_the_queue_from_zero_to_max_tasks(elastic: Synth) -> None:
    _, service = one(elastic, "AWS::ECS::Service")
    _, target = one(elastic, "AWS::ApplicationAutoScaling::ScalableTarget")
    _, task = one(elastic, "AWS::ECS::TaskDefinition")

    assert service["DesiredCount"] == 0
    assert (target["MinCapacity"], target["MaxCapacity"]) == (0, 10)
    assert target["ScalableDimension"] == "ecs:service:DesiredCount"
    assert text(target["ResourceId"]).endswith(f"/${{{one(elastic, 'AWS::ECS::Service')[0]}.Name}}")
    (container,) = task["ContainerDefinitions"]
    assert container["Command"] == ["process", "--follow"]
    # ECS's SIGKILL comes after ptif's grace period: the work in hand is finished or released.
    assert container["StopTimeout"] >= ptif_stop_grace()
    assert not elastic.template.find_resources(
        "AWS::Scheduler::Schedule", {"Properties": {"Target": {"EcsParameters": Match.any_value()}}}
    )


def ptif_stop_grace() -> float:
    from ptif.cli.queue import STOP_GRACE_SECONDS
    from ptif.config import stop_grace_seconds

    return stop_grace_seconds(STOP_GRACE_SECONDS, {})


def steps(synth: Synth, logical_prefix: str) -> list[dict[str, Any]]:
    policies = synth.template.find_resources("AWS::ApplicationAutoScaling::ScalingPolicy")
    (policy,) = [p["Properties"] for k, p in policies.items() if k.startswith(logical_prefix)]
    configuration = policy["StepScalingPolicyConfiguration"]
    assert configuration["AdjustmentType"] == "ExactCapacity"
    return configuration["StepAdjustments"]  # type: ignore[no-any-return]


def test_backlog_sets_one_task_per_backlog_per_task_markers(elastic: Synth) -> None:
    busy = alarm_named(elastic, "BacklogAlarm")
    assert busy["MetricName"] == "PendingMarkers" and busy["Namespace"] == "ptif"
    assert busy["Dimensions"] == [
        {"Name": "Queue", "Value": "rbsc/"},
        {"Name": "Stack", "Value": "ptif"},
    ]
    # From 0 tasks: one queued marker starts one (target tracking could not, from 0).
    assert busy["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert (busy["Threshold"], busy["EvaluationPeriods"], busy["Period"]) == (1, 1, 60)
    scale_out = steps(elastic, "ScaleOnBacklog")
    # Bounds are backlog - 1 (the threshold): 1..500 markers → 1 task, 4,501 and more → 10.
    assert scale_out[0] == {
        "MetricIntervalLowerBound": 0,
        "MetricIntervalUpperBound": 500,
        "ScalingAdjustment": 1,
    }
    assert scale_out[-1] == {"MetricIntervalLowerBound": 4500, "ScalingAdjustment": 10}
    assert [s["ScalingAdjustment"] for s in scale_out] == list(range(1, 11))

    idle = alarm_named(elastic, "QueueEmptyAlarm")
    assert idle["MetricName"] == "PendingMarkers"
    assert idle["ComparisonOperator"] == "LessThanOrEqualToThreshold"
    assert (idle["Threshold"], idle["EvaluationPeriods"]) == (0, 5)
    assert steps(elastic, "ScaleInWhenIdle") == [
        {"MetricIntervalUpperBound": 0, "ScalingAdjustment": 0}
    ]


def test_many_tasks_take_few_steps_and_always_on_keeps_task_count() -> None:
    sys.path.insert(0, str(REPO / "infra"))
    from ptif_infra.elastic import scaling_steps

    settings = load_settings({"maxTasks": "100", "backlogPerTask": "50"}.get, {})
    counts = [count for _, _, count in scaling_steps(settings)]
    assert counts == [1, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100]  # AWS takes 20 steps at most
    assert scaling_steps(settings)[1] == (51, 501, 10)
    with pytest.raises(SettingsError, match="set alwaysOn"):
        load_settings({"maxTasks": "10", "taskCount": "3"}.get, {})
    with pytest.raises(SettingsError, match="more than maxTasks"):
        load_settings({"maxTasks": "2", "taskCount": "3", "alwaysOn": "true"}.get, {})


def test_backlog_is_published_every_minute_by_ptifs_handler(elastic: Synth) -> None:
    publisher = elastic.stack.backlog
    assert publisher is not None
    function = elastic.json["Resources"][elastic.logical_id(publisher.function)]["Properties"]
    assert function["Handler"] == "ptif.aws.backlog_handler"
    assert function["Timeout"] < 60  # one count at a time
    variables = function["Environment"]["Variables"]
    assert variables["PTIF_METRICS_NAMESPACE"] == "ptif"
    assert variables["PTIF_METRICS_DIMENSIONS"] == "Stack=ptif,Queue=rbsc/"
    assert variables["PTIF_QUEUE_PREFIX"] == "rbsc/"
    schedules = elastic.template.find_resources("AWS::Scheduler::Schedule")
    (schedule,) = [s["Properties"] for s in schedules.values()]
    assert schedule["ScheduleExpression"] == "rate(1 minute)"
    assert text(schedule["Target"]["Arn"]) == f"${{{elastic.logical_id(publisher.function)}.Arn}}"
    errors = alarm_named(elastic, "BacklogPublisherAlarm")
    assert errors["MetricName"] == "Errors"


def test_backlog_function_may_list_the_queue_and_put_ptif_metrics_only(elastic: Synth) -> None:
    publisher = elastic.stack.backlog
    assert publisher is not None
    statements = [
        s
        for s in elastic.statements(publisher.role)
        if not all(a.startswith("logs:") for a in as_list(s["Action"]))
    ]
    by_sid = {s["Sid"]: s for s in statements}
    assert set(by_sid) == {"ListQueue", "PutBacklogMetrics"}
    listing = by_sid["ListQueue"]
    assert listing["Action"] == "s3:ListBucket"
    assert text(listing["Resource"]).endswith(".Arn}")
    assert listing["Condition"] == {"StringLike": {"s3:prefix": ["rbsc/", "rbsc/*"]}}
    put = by_sid["PutBacklogMetrics"]
    assert put["Action"] == "cloudwatch:PutMetricData"
    assert put["Condition"] == {"StringEquals": {"cloudwatch:namespace": "ptif"}}


#: What today's daily run deploys, by resource type; the dashboard and its metric filter are new.
DAILY_TYPES = {
    "AWS::CloudWatch::Alarm": 4,
    "AWS::ECS::TaskDefinition": 1,
    "AWS::Lambda::Function": 2,
    "AWS::Scheduler::Schedule": 1,
    "AWS::ECS::Service": 0,
    "AWS::ApplicationAutoScaling::ScalableTarget": 0,
    "AWS::ApplicationAutoScaling::ScalingPolicy": 0,
    "AWS::CloudWatch::Dashboard": 1,
    "AWS::Logs::MetricFilter": 1,
}


def test_max_tasks_one_keeps_the_daily_run(new: Synth) -> None:
    resources = new.json["Resources"].values()
    counts = {kind: sum(r["Type"] == kind for r in resources) for kind in DAILY_TYPES}
    assert counts == DAILY_TYPES
    assert new.stack.backlog is None and new.stack.worker.scaling is None
    _, task = one(new, "AWS::ECS::TaskDefinition")
    assert task["ContainerDefinitions"][0]["Command"] == ["process"]


def dashboard(synth: Synth) -> dict[str, Any]:
    _, props = one(synth, "AWS::CloudWatch::Dashboard")
    body: dict[str, Any] = json.loads(text(props["DashboardBody"]))
    return body


def widget(body: dict[str, Any], title: str) -> dict[str, Any]:
    for candidate in body["widgets"]:
        properties = candidate["properties"]
        if properties.get("title") == title or f"### {title}" in properties.get("markdown", ""):
            return properties  # type: ignore[no-any-return]
    raise AssertionError(f"no widget {title!r}")


def metric_names(properties: dict[str, Any]) -> list[tuple[str, str]]:
    """(metric name, statistic) of each line of a graph widget."""
    found = []
    for line in properties.get("metrics", []):
        names = [part for part in line if isinstance(part, str)]
        options = next((part for part in line if isinstance(part, dict)), {})
        found.append((names[1], options.get("stat", "Average")))
    return found


def test_dashboard_shows_every_stage_with_its_alarms(elastic: Synth) -> None:
    body = dashboard(elastic)
    assert ("PendingMarkers", "Maximum") in metric_names(widget(body, "Backlog: pending markers"))
    oldest = widget(body, "Oldest pending marker (seconds)")
    assert metric_names(oldest) == [("OldestPendingAgeSeconds", "Maximum")]
    assert oldest["annotations"]["horizontal"][0]["value"] == 26 * 3600
    images = widget(body, "Images per hour")
    assert metric_names(images) == [("Processed", "Sum"), ("Failed", "Sum")]
    assert all(line[-1]["period"] == 3600 for line in images["metrics"])
    assert metric_names(widget(body, "Bytes per hour")) == [("BytesIn", "Sum"), ("BytesOut", "Sum")]
    seconds = widget(body, "Conversion seconds per image")
    assert metric_names(seconds) == [("ConversionSeconds", "p50"), ("ConversionSeconds", "p95")]
    tasks = widget(body, "Worker tasks")
    assert [n for n, _ in metric_names(tasks)] == ["RunningTaskCount", "DesiredTaskCount"]
    lambdas = [n for n, _ in metric_names(widget(body, "Lambda errors and throttles"))]
    assert lambdas == ["Errors", "Throttles", "Errors", "Throttles"]  # intake, backlog
    dlq = widget(body, "Intake failure queue (DLQ)")
    assert metric_names(dlq) == [("ApproximateNumberOfMessagesVisible", "Maximum")]
    assert dlq["annotations"]["horizontal"][0]["value"] == 0
    status = widget(body, "Alarms")
    assert len(status["alarms"]) == len(elastic.template.find_resources("AWS::CloudWatch::Alarm"))


def test_daily_dashboard_reads_the_runs_figures(new: Synth) -> None:
    body = dashboard(new)
    assert "elastic mode" in widget(body, "Backlog: pending markers")["markdown"]
    oldest = widget(body, "Oldest pending marker (seconds)")
    assert metric_names(oldest) == [("OldestPendingAgeSeconds", "Maximum")]
    assert oldest["metrics"][0][2:4] == ["Stage", "process"]
    assert [n for n, _ in metric_names(widget(body, "Worker tasks"))] == ["TaskCount"]


def test_conversion_seconds_come_from_the_workers_item_lines(new: Synth) -> None:
    """The metric filter's pattern, checked against a line ptif's JSON log really writes."""
    import logging

    from ptif.console import ItemProgress, JsonFormatter
    from ptif.queue.reports import ItemResult, Outcome

    _, metric_filter = one(new, "AWS::Logs::MetricFilter")
    (transformation,) = metric_filter["MetricTransformations"]
    assert transformation["MetricName"] == "ConversionSeconds"
    assert (transformation["MetricNamespace"], transformation["Unit"]) == ("ptif", "Seconds")
    assert transformation["MetricValue"] == "$.seconds"
    conditions = re.findall(r'\$\.(\w+) = "([^"]*)"', metric_filter["FilterPattern"])

    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(JsonFormatter().format(record))

    logger = logging.getLogger("ptif.items")
    handler, level = Collect(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        ItemProgress(bar=False, run_id="r")(
            ItemResult("rbsc/a.jpg.json", Outcome.CONVERTED, "a.jpg", seconds=1.25)
        )
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    line = json.loads(lines[-1])
    assert conditions == [("logger", "ptif.items"), ("outcome", "converted")]
    assert all(line[field] == value for field, value in conditions)
    assert line["seconds"] == 1.25
