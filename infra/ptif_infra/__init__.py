"""The AWS deployment of ptif: buckets, the intake Lambda function, the Fargate worker, its
schedule, least-privilege roles and alarms. ``infra/app.py`` is the CDK app that builds it."""
