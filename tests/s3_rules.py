"""Where moto is lenient, AWS and S3-compatible stores are strict: these rules make the tests' S3
proxy answer as they do, each citing the documented behaviour it encodes.

- :class:`IamPolicy`: allow only the actions a policy grants, mapping each request to its IAM
  action(s) as the S3 API reference's "Permissions" sections do.
- :func:`refuse_flexible_checksums`: a store that does not implement ``x-amz-checksum-*`` (Cloudflare
  R2 and Backblaze B2 in 2025: ``501 Header 'x-amz-checksum-crc32' not implemented``).
- :func:`require_content_md5`: a store that requires (and checks) ``Content-MD5`` on every body.
- :func:`lock_writes_need_a_checksum`: AWS requires Content-MD5 or x-amz-sdk-checksum-algorithm on
  any upload with an Object Lock retention period.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import re
import threading
from collections.abc import Iterable
from pathlib import Path

from tests.s3_proxy import Action, Answer, ProxiedRequest

README = Path(__file__).resolve().parent.parent / "README.md"
_BUCKET_LEVEL = {
    "ListObjects": "s3:ListBucket",
    "ListMultipartUploads": "s3:ListBucketMultipartUploads",
    "GetObjectLockConfiguration": "s3:GetBucketObjectLockConfiguration",
    "GetBucketLocation": "s3:GetBucketLocation",
    "GetBucketVersioning": "s3:GetBucketVersioning",
    "ListObjectVersions": "s3:ListBucketVersions",
    "HeadBucket": "s3:ListBucket",
}
_OBJECT_LEVEL = {
    "PutObject": "s3:PutObject",
    "CreateMultipartUpload": "s3:PutObject",
    "UploadPart": "s3:PutObject",
    "CompleteMultipartUpload": "s3:PutObject",
    "AbortMultipartUpload": "s3:AbortMultipartUpload",
    "ListParts": "s3:ListMultipartUploadParts",
    "PutObjectRetention": "s3:PutObjectRetention",
    "PutObjectLegalHold": "s3:PutObjectLegalHold",
    "PutObjectTagging": "s3:PutObjectTagging",
    "GetObjectTagging": "s3:GetObjectTagging",
    "GetObjectRetention": "s3:GetObjectRetention",
    "GetObjectLegalHold": "s3:GetObjectLegalHold",
}
_FLEXIBLE_CHECKSUM_HEADERS = re.compile(
    r"x-amz-checksum-(crc32|crc32c|crc64nvme|sha1|sha256|algorithm|type)|x-amz-sdk-checksum-algorithm|x-amz-trailer"
)


def access_denied(action: str) -> Answer:
    return Answer(
        403,
        "AccessDenied",
        f"User is not authorized to perform: {action} because no identity-based policy allows the {action} action",
    )


class IamPolicy:
    """A proxy rule that allows only what ``statements`` grant: ``[(actions, resource patterns)]``.

    The action(s) each request needs, per the S3 API reference:
    GetObject/HeadObject ``s3:GetObject``, with ``versionId`` ``s3:GetObjectVersion``; DeleteObject
    ``s3:DeleteObject``, with ``versionId`` ``s3:DeleteObjectVersion``; the multipart calls and
    PutObject ``s3:PutObject``; ``x-amz-tagging`` on a write also ``s3:PutObjectTagging``; lock headers
    on a write ``s3:PutObjectRetention``/``s3:PutObjectLegalHold``; SSE-KMS: writes and parts need
    ``kms:GenerateDataKey``, completing a multipart upload and reading need ``kms:Decrypt``.
    A HEAD or GET of a missing key answers 403, not 404, without ``s3:ListBucket`` on the bucket.
    A HEAD or GET shows an object's retention (``x-amz-object-lock-mode``/``-retain-until-date``)
    only with ``s3:GetObjectRetention``, and its legal hold only with ``s3:GetObjectLegalHold``
    (HeadObject and GetObject API reference, response headers).
    """

    def __init__(self, statements: Iterable[tuple[Iterable[str], Iterable[str]]]) -> None:
        self.statements = [(set(actions), list(resources)) for actions, resources in statements]
        self._kms_keys: set[str] = set()  # object paths written with SSE-KMS
        self._lock = threading.Lock()
        self.denied: list[tuple[str, str]] = []  # (operation, action)

    @classmethod
    def from_documents(cls, documents: Iterable[dict[str, object]]) -> IamPolicy:
        statements = []
        for document in documents:
            for statement in document["Statement"]:  # type: ignore[attr-defined]
                assert statement["Effect"] == "Allow"
                actions, resources = statement["Action"], statement["Resource"]
                statements.append(
                    (
                        [actions] if isinstance(actions, str) else actions,
                        [resources] if isinstance(resources, str) else resources,
                    )
                )
        return cls(statements)

    def allows(self, action: str, resource: str) -> bool:
        return any(
            action in actions and any(fnmatch.fnmatchcase(resource, r) for r in resources)
            for actions, resources in self.statements
        )

    def needs(self, request: ProxiedRequest) -> list[tuple[str, str]]:
        """(action, resource) pairs the request needs."""
        operation, headers = request.operation, request.headers
        if not request.key:
            return [(_BUCKET_LEVEL.get(operation, f"s3:{operation}"), f"arn:aws:s3:::{request.bucket}")]
        resource = f"arn:aws:s3:::{request.bucket}/{request.key}"
        versioned = "versionId" in request.query
        if operation in ("GetObject", "HeadObject"):
            needed = ["s3:GetObjectVersion" if versioned else "s3:GetObject"]
            with self._lock:
                if operation == "GetObject" and request.path in self._kms_keys:
                    needed.append("kms:Decrypt")
        elif operation == "DeleteObject":
            needed = ["s3:DeleteObjectVersion" if versioned else "s3:DeleteObject"]
        else:
            needed = [_OBJECT_LEVEL.get(operation, f"s3:{operation}")]
        if operation in ("PutObject", "CreateMultipartUpload"):
            if "x-amz-tagging" in headers:
                needed.append("s3:PutObjectTagging")
            if "x-amz-object-lock-mode" in headers or "x-amz-object-lock-retain-until-date" in headers:
                needed.append("s3:PutObjectRetention")
            if "x-amz-object-lock-legal-hold" in headers:
                needed.append("s3:PutObjectLegalHold")
            kms = headers.get("x-amz-server-side-encryption", "").startswith("aws:kms")
            with self._lock:
                (self._kms_keys.add if kms else self._kms_keys.discard)(request.path)
            if kms:
                needed.append("kms:GenerateDataKey")
        elif operation in ("UploadPart", "CompleteMultipartUpload"):
            with self._lock:
                if request.path in self._kms_keys:
                    needed.append("kms:GenerateDataKey" if operation == "UploadPart" else "kms:Decrypt")
        return [(action, "*" if action.startswith("kms:") else resource) for action in needed]

    def __call__(self, request: ProxiedRequest) -> Action:
        for action, resource in self.needs(request):
            if action.startswith("kms:") and not any(action in actions for actions, _ in self.statements):
                return self._deny(request, action)
            if not action.startswith("kms:") and not self.allows(action, resource):
                return self._deny(request, action)
        return None

    def after(self, request: ProxiedRequest, status: int) -> Answer | None:
        """No ``s3:ListBucket``: a missing key is 403 AccessDenied, so existence cannot be probed."""
        missing = status == 404 and request.operation in ("HeadObject", "GetObject")
        if missing and not self.allows("s3:ListBucket", f"arn:aws:s3:::{request.bucket}"):
            return self._deny(request, "s3:ListBucket")
        return None

    def shown(self, request: ProxiedRequest, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """The response headers this policy lets the caller see."""
        if request.operation not in ("GetObject", "HeadObject"):
            return headers
        resource = f"arn:aws:s3:::{request.bucket}/{request.key}"
        hidden = set()
        if not self.allows("s3:GetObjectRetention", resource):
            hidden |= {"x-amz-object-lock-mode", "x-amz-object-lock-retain-until-date"}
        if not self.allows("s3:GetObjectLegalHold", resource):
            hidden.add("x-amz-object-lock-legal-hold")
        return [(name, value) for name, value in headers if name.lower() not in hidden]

    def _deny(self, request: ProxiedRequest, action: str) -> Answer:
        with self._lock:
            self.denied.append((request.operation, action))
        return access_denied(action)


def readme_policies() -> dict[str, dict[str, object]]:
    """The IAM policies the README documents, by name: each ```json block after ``<!-- iam: NAME -->``."""
    text = README.read_text()
    found = re.findall(r"<!-- iam: ([a-z0-9-]+) -->\s*```json\n(.*?)```", text, flags=re.S)
    return {name: json.loads(body) for name, body in found}


def policy_for(bucket: str, *names: str) -> IamPolicy:
    """The union of README policies ``names``, with the README's example bucket replaced by ``bucket``."""
    documents = readme_policies()
    chosen = [json.loads(json.dumps(documents[name]).replace("my-data-lake", bucket)) for name in names]
    return IamPolicy.from_documents(chosen)


def refuse_flexible_checksums(request: ProxiedRequest) -> Action:
    """Cloudflare R2 and Backblaze B2 (2025): ``501 NotImplemented`` for flexible-checksum headers."""
    for name in request.headers:
        if _FLEXIBLE_CHECKSUM_HEADERS.fullmatch(name):
            return Answer(501, "NotImplemented", f"Header '{name}' not implemented")
    return None


def require_content_md5(request: ProxiedRequest) -> Action:
    """A store that takes only ``Content-MD5``: required on every body, and checked."""
    if request.operation not in ("PutObject", "UploadPart"):
        return None
    given = request.headers.get("content-md5")
    if not given:
        return Answer(400, "InvalidRequest", "Missing required header for this request: Content-Md5")
    if given != base64.b64encode(hashlib.md5(request.body).digest()).decode():
        return Answer(400, "BadDigest", "The Content-MD5 you specified did not match what we received.")
    return None


def lock_writes_need_a_checksum(request: ProxiedRequest) -> Action:
    """AWS: "The Content-MD5 or x-amz-sdk-checksum-algorithm header is required for any request to
    upload an object with a retention period configured using Amazon S3 Object Lock" (moto agrees); and
    PutObjectRetention/PutObjectLegalHold require a checksum (``httpChecksum.requestChecksumRequired``)."""
    headers = request.headers
    locked = any(name.startswith("x-amz-object-lock-") for name in headers)
    lock_call = request.operation in ("PutObjectRetention", "PutObjectLegalHold")
    if not lock_call and (request.operation != "PutObject" or not locked):
        return None
    if "content-md5" in headers or "x-amz-sdk-checksum-algorithm" in headers:
        return None
    return Answer(
        400,
        "InvalidRequest",
        "Content-MD5 or x-amz-sdk-checksum-algorithm header required to upload an object with a retention "
        "period configured using Object Lock",
    )


def first_of(*rules: object) -> object:
    """Apply rules in order; the first that answers wins."""

    def rule(request: ProxiedRequest) -> Action:
        for each in rules:
            action = each(request)  # type: ignore[operator]
            if action is not None:
                return action  # type: ignore[no-any-return]
        return None

    return rule
