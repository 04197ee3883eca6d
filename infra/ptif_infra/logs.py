"""Log groups with a retention, shared by the function and the task."""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_logs as logs
from constructs import Construct


def log_group(scope: Construct, name: str, days: int) -> logs.LogGroup:
    """A log group kept ``days`` days (one of the settings' RETENTION_DAYS), removed with the
    stack."""
    group = logs.LogGroup(scope, name, removal_policy=RemovalPolicy.DESTROY)
    cfn = group.node.default_child
    assert isinstance(cfn, logs.CfnLogGroup)
    cfn.retention_in_days = days
    return group
