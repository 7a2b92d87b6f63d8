"""Errors raised by the provider: a small hierarchy so callers catch exactly what they handle."""

from __future__ import annotations

from datetime import datetime

from airflow_provider_c66.redaction import redact_text


class Cloud66InputError(ValueError):
    """An argument was refused before any request was sent; the message names the argument."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


class Cloud66ApiError(Exception):
    """The Cloud 66 API answered with an error, or with something that is not a valid answer.

    :param message: what went wrong, for a person.
    :param status: the HTTP status, or None when no answer arrived.
    :param error_id: the API's ``error`` field (``throttled``, ``unauthorized`` ...), if any.
    :param description: the API's ``details`` or ``error_description``, if any.
    :param method: the HTTP method of the request.
    :param path: the API path of the request (never a signed URL's query string).

    The message and description may quote Cloud 66's own words, which can echo a signed URL: both
    pass through :func:`~airflow_provider_c66.redaction.redact_text` here, so no caller can forget it.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        error_id: str | None = None,
        description: str | None = None,
        method: str | None = None,
        path: str | None = None,
    ) -> None:
        self.status = status
        self.error_id = error_id
        self.description = redact_text(description) if description is not None else None
        self.method = method
        self.path = path
        super().__init__(redact_text(message))


class Cloud66AuthError(Cloud66ApiError):
    """401 or 403: the token is wrong, revoked, or lacks the scope the call needs."""


class Cloud66NotFoundError(Cloud66ApiError):
    """404: the stack, backup or file does not exist (or the token's account cannot see it)."""


class Cloud66RateLimitError(Cloud66ApiError):
    """The hourly request budget is spent and resets later than the hook is allowed to wait.

    :param reset_at: when the budget is expected to be available again (UTC).
    """

    def __init__(self, message: str, *, reset_at: datetime | None = None, **kwargs: object) -> None:
        self.reset_at = reset_at
        super().__init__(message, **kwargs)  # type: ignore[arg-type]


class Cloud66CancelledError(Cloud66ApiError):
    """The call was given up because its task is being stopped (``on_kill``): no further attempt is made."""


class Cloud66ResponseError(Cloud66ApiError):
    """The API answered 2xx with a body or record that cannot be read (not JSON, wrong shape)."""


class Cloud66OutcomeUnknownError(Cloud66ResponseError):
    """A POST (create a backup task, import a backup) whose outcome cannot be known: it got a 2xx that
    is not a Cloud 66 envelope, a 5xx, or no answer after it was sent. Cloud 66 may have carried it out,
    so it is never sent again; the message says what to check in Cloud 66. The create and import
    operators fail their task without retries on it, since a retry would POST again.
    """
