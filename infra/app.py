#!/usr/bin/env python3
"""The ptif CDK app: run `cdk synth` or `cdk deploy` in this folder (see docs/operations.md).

Settings come from CDK context (``-c sourceBucket=my-scans``) or the environment
(``PTIF_CDK_SOURCE_BUCKET=my-scans``); ``ptif_infra/settings.py`` lists them all.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
# ptif itself (src/, also the Lambda function's code): the policies take the process store's
# folders from ptif.queue.layout, which needs neither pyvips nor boto3.
sys.path.insert(1, str(Path(__file__).resolve().parents[1] / "src"))

from ptif_infra.application import build_app
from ptif_infra.settings import SettingsError

if __name__ == "__main__":
    try:
        app, _ = build_app()
    except SettingsError as error:  # one line naming the setting, not a traceback
        sys.exit(f"ptif: {error}")
    app.synth()
