"""Provider metadata that Airflow's ProvidersManager reads through the ``apache_airflow_provider`` entry point."""

from __future__ import annotations

from typing import Any

from airflow_provider_c66 import __version__

# The connection form, said once: the hook's get_ui_field_behaviour() returns this same dict, and
# its get_connection_form_widgets() (for releases before 3.2, with wtforms) is built from CONNECTION_FIELDS.
CONNECTION_FORM: dict[str, Any] = {
    "hidden_fields": ["schema", "port", "login"],
    "relabeling": {"host": "API URL", "password": "Access token"},
    "placeholders": {
        "host": "https://app.cloud66.com/api/3",
        "password": "personal access token (scope public; admin to create or import backups)",
    },
}
# The extra fields (Airflow 3.2+ reads them as "conn-fields"); saved in the connection's extra.
CONNECTION_FIELDS: dict[str, Any] = {
    "account_id": {
        "label": "Account id",
        "description": "Cloud 66 account to act in (sent as X-Account); empty for the token's own",
        "schema": {"type": ["string", "null"]},
    },
    "timeout": {
        "label": "Timeout",
        "description": "seconds one request may wait for Cloud 66's answer (1 to 3600)",
        "schema": {"type": ["integer", "null"], "default": 60, "minimum": 1, "maximum": 3600},
    },
}


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-provider-c66",
        "name": "Cloud 66",
        "description": "Cloud 66 managed database backups: create them, wait for them, archive them into S3.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "Cloud 66",
                "external-doc-url": "https://help.cloud66.com/",
                "tags": ["service"],
            }
        ],
        "hooks": [
            {"integration-name": "Cloud 66", "python-modules": ["airflow_provider_c66.hooks.cloud66"]},
        ],
        "operators": [
            {
                "integration-name": "Cloud 66",
                "python-modules": [
                    "airflow_provider_c66.operators.backups",
                    "airflow_provider_c66.transfers.verify_archive",
                    "airflow_provider_c66.transfers.prune_archives",
                ],
            },
        ],
        "sensors": [
            {"integration-name": "Cloud 66", "python-modules": ["airflow_provider_c66.sensors.backups"]},
        ],
        "triggers": [
            {"integration-name": "Cloud 66", "python-modules": ["airflow_provider_c66.triggers.backups"]},
        ],
        "transfers": [
            {
                "source-integration-name": "Cloud 66",
                "target-integration-name": "Amazon Simple Storage Service (S3)",
                "python-module": "airflow_provider_c66.transfers.backup_to_s3",
            },
            {
                "source-integration-name": "Amazon Simple Storage Service (S3)",
                "target-integration-name": "Cloud 66",
                "python-module": "airflow_provider_c66.transfers.s3_to_cloud66",
            },
        ],
        "asset-uris": [
            {
                "schemes": ["cloud66"],
                "handler": "airflow_provider_c66.assets.sanitize_uri",
                "factory": "airflow_provider_c66.assets.create_asset",
                "to_openlineage_converter": "airflow_provider_c66.assets.convert_asset_to_openlineage",
            }
        ],
        "connection-types": [
            {
                "connection-type": "cloud66",
                "hook-class-name": "airflow_provider_c66.hooks.cloud66.Cloud66Hook",
                "hook-name": "Cloud 66",
                "conn-fields": CONNECTION_FIELDS,
                "ui-field-behaviour": {
                    key.replace("_", "-"): value for key, value in CONNECTION_FORM.items()
                },
            }
        ],
    }
