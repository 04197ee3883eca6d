"""cdk-nag (AwsSolutions) findings accepted on purpose, each with its reason.

cdk-nag v3 acknowledges each finding by its exact id, so the wildcard findings are derived from
the policies themselves: only S3 object ARNs under a bucket and prefix (``<bucket>/rbsc/*``)
are accepted, never ``*`` or a wildcard action.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from aws_cdk import Acknowledgment, Stack, Validations
from aws_cdk import aws_iam as iam
from constructs import IConstruct

from ptif_infra.stack import PtifStack

PACK = "AwsSolutions::AwsSolutions"
#: A bucket (a token or a name) followed by a key prefix and one trailing wildcard.
_OBJECT_PREFIX = re.compile(r"^(<[\w.]+>|arn:<AWS::Partition>:s3:::[a-z0-9.-]+)/[^*]*\*$")
_PREFIX_REASON = (
    "Object-level S3 permissions are scoped to one bucket and key prefix "
    "(bucket/prefix/*): the wildcard is the set of keys under that prefix, which S3 "
    "cannot name any other way"
)


def acknowledge_findings(stack: PtifStack) -> None:
    for role in (stack.intake.role, stack.worker.role):
        _acknowledge_prefixes(role)
    _acknowledge_notifications_role(stack)
    _acknowledge_buckets(stack)
    _acknowledge_function(stack)
    _acknowledge_worker(stack)
    _acknowledge_backlog(stack)


def _acknowledge_prefixes(role: iam.Role) -> None:
    for resource in wildcard_resources(role):
        if not _OBJECT_PREFIX.match(resource):
            continue  # not acknowledged: cdk-nag fails the synth
        _acknowledge(role, f"IAM5[Resource::{resource}]", _PREFIX_REASON)


def _acknowledge_notifications_role(stack: PtifStack) -> None:
    role = stack.buckets.notifications_role
    for resource in wildcard_resources(role):
        if ":log-group:/aws/lambda/" in resource:
            _acknowledge(
                role,
                f"IAM5[Resource::{resource}]",
                "CDK's notification handler writes its own logs; its log group is named after "
                "the function, whose generated name ends in a random suffix",
            )


def _acknowledge_buckets(stack: PtifStack) -> None:
    for bucket in stack.buckets.created:
        _acknowledge(
            bucket,
            "S1",
            "Server access logs would need another bucket and a log object per request; every "
            "conversion is recorded in ptif's run reports, and CloudTrail data events can be "
            "turned on where an audit trail of reads is required",
        )


def _acknowledge_function(stack: PtifStack) -> None:
    _acknowledge(
        stack.intake.failures,
        "SQS3",
        "This queue is itself the dead-letter target: the intake function's on-failure "
        "destination for events it could not queue after Lambda's retries",
    )
    _acknowledge(
        stack.intake.function,
        "L1",
        "The runtime is a setting (lambdaRuntime, python3.12 by default, supported by Lambda "
        "until 2028); it is moved on purpose, after ptif's handler is tested on the new one",
    )


def _acknowledge_worker(stack: PtifStack) -> None:
    _acknowledge(
        stack.worker.task,
        "ECS2",
        "The environment holds store URLs and conversion settings, no secrets; credentials "
        "come from the task role",
    )
    execution = stack.worker.task.execution_role
    if execution is not None:
        _acknowledge(
            execution,
            "IAM5[Resource::*]",
            "ecr:GetAuthorizationToken has no resource-level permissions: AWS requires '*'",
        )
    vpc = stack.node.try_find_child("Vpc")
    if vpc is not None:
        _acknowledge(
            vpc,
            "VPC7",
            "The VPC holds only the worker's outbound calls to S3, ECR and CloudWatch and "
            "accepts no inbound traffic; flow logs would cost more than they tell here",
        )


def _acknowledge_backlog(stack: PtifStack) -> None:
    """The elastic mode's backlog function and the schedule that invokes it."""
    if stack.backlog is None:
        return
    function = stack.backlog.function
    _acknowledge(
        function,
        "L1",
        "The runtime is a setting (lambdaRuntime), shared with the intake function and moved "
        "with it, after ptif's handlers are tested on the new one",
    )
    _acknowledge(
        stack.backlog.role,
        "IAM5[Resource::*]",
        "cloudwatch:PutMetricData has no resource-level permissions; the statement is bound "
        "to ptif's namespace by the cloudwatch:namespace condition",
    )
    versions = nag_name(stack.resolve(function.function_arn)) + ":*"
    for child in stack.node.children:
        if isinstance(child, iam.Role) and versions in set(wildcard_resources(child)):
            _acknowledge(
                child,
                f"IAM5[Resource::{versions}]",
                "EventBridge Scheduler's role may invoke the backlog function and its "
                "versions, and nothing else",
            )


def wildcard_resources(role: iam.Role) -> Iterator[str]:
    """The resources with a ``*`` in the role's policy, as cdk-nag names them."""
    policy = role.node.try_find_child("DefaultPolicy")
    if not isinstance(policy, iam.Policy):
        return
    document = Stack.of(role).resolve(policy.document)
    for statement in document.get("Statement", []):
        resources = statement.get("Resource", [])
        for resource in resources if isinstance(resources, list) else [resources]:
            name = nag_name(resource)
            if "*" in name:
                yield name


def nag_name(value: Any) -> str:
    """A resolved CloudFormation value as cdk-nag prints it: ``<Logical.Arn>/rbsc/*``."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Fn::Join" in value:
        delimiter, parts = value["Fn::Join"]
        return str(delimiter).join(nag_name(part) for part in parts)
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        return "<" + ".".join(value["Fn::GetAtt"]) + ">"
    if isinstance(value, dict) and "Ref" in value:
        return f"<{value['Ref']}>"
    raise ValueError(f"cannot name {value!r} as cdk-nag does")


def _acknowledge(construct: IConstruct, rule: str, reason: str) -> None:
    Validations.of(construct).acknowledge(Acknowledgment(id=f"{PACK}-{rule}", reason=reason))
