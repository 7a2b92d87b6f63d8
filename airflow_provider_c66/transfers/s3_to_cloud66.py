"""S3ToCloud66ImportOperator: the way back, importing an archived backup from S3 into a stack."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_c66 import validation
from airflow_provider_c66.exceptions import Cloud66InputError
from airflow_provider_c66.hooks.cloud66 import Cloud66Hook, mask_credential
from airflow_provider_c66.transfers import archive

try:
    from airflow.providers.common.compat.sdk import AirflowException, BaseOperator
except ImportError:  # pragma: no cover
    from airflow.sdk import BaseOperator
    from airflow.sdk.exceptions import AirflowException

MIN_EXPIRY = 300
MAX_EXPIRY = 7 * 24 * 3600  # S3's limit for a presigned URL


class S3ToCloud66ImportOperator(BaseOperator):  # type: ignore[misc]
    """Import a backup archived in S3 into a Cloud 66 stack.

    The object is presigned (a GET URL valid for ``expires_in`` seconds) and handed to Cloud 66's
    import call, which downloads it. The object must exist before anything is sent to Cloud 66.

    :param s3_bucket: the bucket holding the archive.
    :param s3_key: the archive object's key (for example the first URI the archive operator returned).
    :param stack_id: the stack to import into.
    :param group: the backup group the imported backup joins.
    :param db_type: its database type (mysql, postgresql, redis, mongodb).
    :param expires_in: presigned URL lifetime in seconds (300 to 604800); Cloud 66 must start
        downloading within it.
    :param aws_conn_id: the Amazon connection (``S3Hook``).
    :param cloud66_conn_id: the Cloud 66 connection (token with the ``admin`` scope).
    :return: the API's message.
    """

    template_fields: Sequence[str] = (
        "s3_bucket",
        "s3_key",
        "stack_id",
        "group",
        "db_type",
        "expires_in",
        "aws_conn_id",
        "cloud66_conn_id",
    )

    def __init__(
        self,
        *,
        s3_bucket: str,
        s3_key: str,
        stack_id: str,
        group: int | str,
        db_type: str,
        expires_in: int = 6 * 3600,
        aws_conn_id: str | None = "aws_default",
        cloud66_conn_id: str = Cloud66Hook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.s3_bucket = s3_bucket
        self.s3_key = s3_key
        self.stack_id = stack_id
        self.group = group
        self.db_type = db_type
        self.expires_in = expires_in
        self.aws_conn_id = aws_conn_id
        self.cloud66_conn_id = cloud66_conn_id

    def execute(self, context: Any) -> str:
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        bucket = archive.bucket_name(self.s3_bucket)
        key = self._key()
        stack = validation.stack_id(self.stack_id)
        group = validation.group(self.group)
        db_type = validation.db_type(self.db_type)
        expires = validation.positive_int(self.expires_in, "expires_in", maximum=MAX_EXPIRY)
        if expires < MIN_EXPIRY:
            raise Cloud66InputError("expires_in", f"must be at least {MIN_EXPIRY} seconds, got {expires}")

        s3 = S3Hook(aws_conn_id=self.aws_conn_id)
        if not s3.check_for_key(key, bucket_name=bucket):
            raise AirflowException(f"s3://{bucket}/{key} does not exist; nothing was sent to Cloud 66.")
        url = s3.generate_presigned_url(
            client_method="get_object", params={"Bucket": bucket, "Key": key}, expires_in=expires
        )
        if not url:
            raise AirflowException(f"Could not presign s3://{bucket}/{key}")
        mask_credential(urlsplit(url).query)
        message = Cloud66Hook(self.cloud66_conn_id).import_backup(
            stack, group=group, db_type=db_type, remote_url=url
        )
        self.log.info(
            "Cloud 66 accepted the import of s3://%s/%s into stack %r: %s", bucket, key, stack, message
        )
        return message

    def _key(self) -> str:
        key = self.s3_key
        if isinstance(key, str) and key.startswith("s3://"):
            raise Cloud66InputError("s3_key", "must be a key inside s3_bucket, not an s3:// URI")
        if not isinstance(key, str) or not key or key.startswith("/") or any(ord(c) < 32 for c in key):
            raise Cloud66InputError("s3_key", f"must be a relative object key, got {key!r:.80}")
        if any(part in (".", "..") for part in key.split("/")):
            raise Cloud66InputError("s3_key", f"must not contain '.' or '..' segments, got {key!r:.80}")
        return key
