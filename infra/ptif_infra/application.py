"""Builds the CDK app: the ptif stack from the settings, checked by cdk-nag at synth."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from aws_cdk import App, Environment, Validations
from cdk_nag import AwsSolutionsChecks

from ptif_infra.nag import acknowledge_findings
from ptif_infra.settings import load_settings
from ptif_infra.stack import PtifStack


def build_app(
    context: Mapping[str, Any] | None = None,
    *,
    outdir: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[App, PtifStack]:
    """The app and its one stack. cdk-nag's AwsSolutions rules run when it is synthesised and
    fail the synth on any finding not acknowledged in :mod:`ptif_infra.nag`."""
    app = App(context=dict(context or {}), outdir=outdir)
    environ = os.environ if environ is None else environ
    settings = load_settings(app.node.try_get_context, environ)
    stack = PtifStack(app, settings.stack_name, settings=settings, env=_environment(environ))
    acknowledge_findings(stack)
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return app, stack


def _environment(environ: Mapping[str, str]) -> Environment:
    """The account and region of the credentials `cdk` runs with (a VPC lookup needs them)."""
    return Environment(
        account=environ.get("CDK_DEFAULT_ACCOUNT"), region=environ.get("CDK_DEFAULT_REGION")
    )
