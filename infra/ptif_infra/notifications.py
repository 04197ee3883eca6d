"""The role of the function CDK adds to set the source bucket's notifications.

S3 notifications are configured by a custom resource, a Lambda function CDK adds to the stack.
Left alone, CDK gives it ``AWSLambdaBasicExecutionRole`` and ``s3:PutBucketNotification`` on
every bucket (``Resource: *``). This role lets it read and write the notification configuration
of the source bucket only; CDK is told not to add to it.
"""

from __future__ import annotations

from aws_cdk import ArnFormat, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from constructs import Construct

#: The construct id CDK gives the handler (one per stack).
HANDLER_ID = "BucketNotificationsHandler050a0587b7544547bf325f094a3db834"


def notifications_role(scope: Construct) -> iam.Role:
    return iam.Role(
        scope,
        "NotificationsHandlerRole",
        assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
        description="CDK's S3 notification handler: the source bucket's notifications only",
    )


def allow_notifications(role: iam.Role, source: s3.IBucket) -> None:
    stack = Stack.of(role)
    logs = stack.format_arn(
        service="logs",
        resource="log-group",
        resource_name=f"/aws/lambda/{stack.stack_name}-{HANDLER_ID[:20]}*",
        arn_format=ArnFormat.COLON_RESOURCE_NAME,
    )
    role.add_to_policy(
        iam.PolicyStatement(
            sid="SourceBucketNotifications",
            actions=["s3:GetBucketNotification", "s3:PutBucketNotification"],
            resources=[source.bucket_arn],
        )
    )
    role.add_to_policy(
        iam.PolicyStatement(
            sid="HandlerLogs",
            actions=["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
            resources=[logs],
        )
    )
