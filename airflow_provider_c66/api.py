"""The Cloud 66 API without I/O: request building, answer interpretation, retry and rate-limit policy.

The sync hook (``requests``) and the async trigger path (``aiohttp``) both drive these pieces; the
only thing that differs between them is the call that moves bytes. Keeping policy here means one
retry policy, one error mapping and one envelope parser for the whole package.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import threading
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote

from airflow_provider_c66 import __version__
from airflow_provider_c66.exceptions import (
    Cloud66ApiError,
    Cloud66AuthError,
    Cloud66NotFoundError,
    Cloud66OutcomeUnknownError,
    Cloud66RateLimitError,
    Cloud66ResponseError,
)

# Re-exported: callers have always found them here.
from airflow_provider_c66.redaction import redact_text as redact_text
from airflow_provider_c66.redaction import redact_url as redact_url

DEFAULT_BASE_URL = "https://app.cloud66.com/api/3"
USER_AGENT = f"airflow-provider-c66/{__version__}"
MAX_PAGES = 10_000
POST_NOT_REPEATED = (
    "It was not sent again: Cloud 66 may have carried it out. Check the stack's backups (and its "
    "backup tasks) in Cloud 66 before running this task again"
)
"""What every error about a POST of unknown outcome says (see :class:`Cloud66OutcomeUnknownError`)."""


def undo_percent_quirk(url: str) -> str:
    """Cloud 66 double-encodes ``%`` in signed URLs (``%252F``); the official client undoes it so."""
    return url.replace("%25", "%")


def segment(value: str | int) -> str:
    """One URL path segment, escaped so an id can never change the path."""
    return quote(str(value), safe="")


@dataclass(frozen=True)
class ApiRequest:
    """One API call: what to send and, for error messages, what it was about.

    :param method: ``GET`` or ``POST``.
    :param path: the path below the base URL, ending in ``.json``.
    :param params: query parameters (GET).
    :param body: JSON body (POST).
    :param subject: what the path names, for a 404 message ("stack 'abc'").
    """

    method: str
    path: str
    params: Mapping[str, str | int] = field(default_factory=dict)
    body: Mapping[str, Any] | None = None
    subject: str = ""

    @property
    def idempotent(self) -> bool:
        """Whether sending it twice is harmless (a POST creates a backup task or an import)."""
        return self.method in ("GET", "HEAD")

    def url(self, base_url: str) -> str:
        return base_url.rstrip("/") + self.path

    def with_page(self, page: int) -> ApiRequest:
        return ApiRequest(self.method, self.path, {**self.params, "page": page}, self.body, self.subject)


@dataclass(frozen=True)
class Page:
    """A decoded success envelope: the ``response`` value and whether another page follows."""

    response: Any
    has_next: bool
    remaining: int | None


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value
    return None


def _parse_json(body: bytes) -> Any:
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """``Retry-After`` in seconds (delta or HTTP date), or None when absent or unreadable."""
    value = _header(headers, "Retry-After")
    if value is None:
        return None
    value = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def budget_reset_at(headers: Mapping[str, str], now: float | None = None) -> float:
    """Epoch seconds at which a spent hourly budget is available again.

    Cloud 66 documents only "until the next hour". ``Retry-After`` and ``X-RateLimit-Reset`` (epoch
    or seconds) are honoured when a proxy or a newer API sends them; else the top of the next hour.
    """
    now = time.time() if now is None else now
    retry_after = parse_retry_after(headers, now)
    if retry_after is not None:
        return now + retry_after
    reset = _header(headers, "X-RateLimit-Reset")
    if reset and re.fullmatch(r"\d+(\.\d+)?", reset.strip()):
        value = float(reset)
        return value if value > 1_000_000_000 else now + value
    return (now // 3600 + 1) * 3600


def _describe_error(payload: Any, body: bytes, content_type: str | None) -> tuple[str | None, str]:
    if isinstance(payload, Mapping):
        error_id = payload.get("error")
        details = payload.get("details")
        description = (
            details if isinstance(details, str) and details.strip() else payload.get("error_description")
        )
        return (str(error_id) if error_id else None, str(description or "").strip())
    kind = (content_type or "unknown type").split(";")[0]
    return None, f"non-JSON answer ({kind}, {len(body)} bytes)"


@dataclass
class Outcome:
    """What one attempt came to: a page, or an error and whether trying again can help."""

    page: Page | None = None
    error: Cloud66ApiError | None = None
    retryable: bool = False
    retry_after: float | None = None
    reset_at: float | None = None  # set when the hourly budget is spent


def interpret(request: ApiRequest, status: int, headers: Mapping[str, str], body: bytes) -> Outcome:
    """Map one HTTP answer to an :class:`Outcome`; the one place where status codes get meaning."""
    payload = _parse_json(body)
    where = f"{request.method} {request.path}"
    ctx: dict[str, Any] = {"status": status, "method": request.method, "path": request.path}
    remaining_text = _header(headers, "X-RateLimit-Remaining")
    remaining = int(remaining_text) if remaining_text and remaining_text.strip().isdigit() else None
    if 200 <= status < 300:
        if not isinstance(payload, Mapping) or "response" not in payload:
            what = _describe_error(payload, body, _header(headers, "Content-Type"))[1]
            message = f"{where}: the answer is not a Cloud 66 JSON envelope ({what})"
            if not request.idempotent:
                # A 2xx means something took the request; it may have been Cloud 66 after it acted.
                return _outcome_unknown(message, ctx)
            return Outcome(error=Cloud66ResponseError(message, **ctx), retryable=True)
        pagination = payload.get("pagination")
        has_next = isinstance(pagination, Mapping) and pagination.get("next") not in (None, "", False)
        return Outcome(page=Page(payload["response"], has_next, remaining))

    error_id, description = _describe_error(payload, body, _header(headers, "Content-Type"))
    ctx.update(error_id=error_id, description=description)
    detail = f"{status} {error_id + ': ' if error_id else ''}{description}".strip()
    if status == 503 and error_id == "throttled":
        reset = budget_reset_at(headers)
        throttled = Cloud66RateLimitError(
            f"{where}: the Cloud 66 hourly request budget is spent ({detail}); it resets at {_utc(reset)}.",
            reset_at=datetime.fromtimestamp(reset, UTC),
            **ctx,
        )
        return Outcome(error=throttled, retryable=True, reset_at=reset)
    if status == 429 or status == 408 or (status >= 500 and error_id != "not_implemented"):
        message = f"{where}: Cloud 66 answered {detail}"
        if not request.idempotent and status != 429:
            # A POST that got a 5xx (or a proxy's 408) may have been carried out: repeating it could
            # create a second backup task. Only "rejected, try later" (429) is safe to repeat.
            return _outcome_unknown(message, ctx)
        error = Cloud66ApiError(message, **ctx)
        return Outcome(error=error, retryable=True, retry_after=parse_retry_after(headers))
    if status == 401:
        message = f"{where}: Cloud 66 rejected the access token ({detail}); check the connection's password"
        return Outcome(error=Cloud66AuthError(message, **ctx))
    if status == 403:
        need = (
            "creating or importing backups needs a token with the 'admin' scope"
            if request.method == "POST"
            else "reading backups needs a token with the 'public' scope"
        )
        return Outcome(error=Cloud66AuthError(f"{where}: forbidden ({detail}); {need}", **ctx))
    if status == 404:
        subject = request.subject or "the resource"
        message = f"{where}: {subject} was not found ({detail}); check the id and the token's account"
        return Outcome(error=Cloud66NotFoundError(message, **ctx))
    if status == 402:
        return Outcome(
            error=Cloud66ApiError(f"{where}: the Cloud 66 account needs payment ({detail})", **ctx)
        )
    return Outcome(error=Cloud66ApiError(f"{where}: Cloud 66 answered {detail}", **ctx))


def transport_failure(request: ApiRequest, exc: BaseException, *, maybe_sent: bool = True) -> Outcome:
    """A request that got no answer (refused, reset, timed out).

    Worth another try, except a POST that may have reached Cloud 66 (``maybe_sent``): it is not
    repeated (:class:`Cloud66OutcomeUnknownError`), so a dropped answer never turns into two backup
    tasks. A connection that could not even be opened is retried for every method.
    """
    message = f"{request.method} {request.path}: no answer from Cloud 66 ({type(exc).__name__}: {exc})"
    if not request.idempotent and maybe_sent:
        return _outcome_unknown(message, {"method": request.method, "path": request.path})
    return Outcome(
        error=Cloud66ApiError(redact_text(message), method=request.method, path=request.path),
        retryable=True,
    )


def _outcome_unknown(message: str, ctx: Mapping[str, Any]) -> Outcome:
    """A POST that may have been carried out: final, never repeated, and the error says what to check."""
    return Outcome(
        error=Cloud66OutcomeUnknownError(f"{message}. {POST_NOT_REPEATED}", **ctx), retryable=False
    )


def _utc(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@dataclass(frozen=True)
class RetryPolicy:
    """How hard one call tries: exponential backoff with full jitter, bounded in attempts and time.

    :param max_attempts: attempts per call, the first included.
    :param backoff_base: the first backoff in seconds; doubles each attempt.
    :param backoff_max: the cap on one backoff.
    :param total_timeout: no new attempt starts after this many seconds since the first.
    :param max_rate_limit_wait: how long a call may wait for a spent hourly budget to reset
        before raising :class:`Cloud66RateLimitError` so Airflow's task retry takes over.
    """

    max_attempts: int = 6
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    total_timeout: float = 300.0
    max_rate_limit_wait: float = 60.0

    def backoff(self, attempt: int) -> float:
        return random.uniform(0, min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1)))


class RateBudget:
    """Cloud 66's hourly request budget as its answers last reported it.

    One budget is shared by every hook in a process that uses the same API URL and token
    (:meth:`shared`): a triggerer running 200 waits learns from the first ``503 throttled`` that the
    budget is spent, and none of the others sends a request until the reset. Tasks in other processes
    learn the same from the API's own answers (``X-RateLimit-Remaining``, ``503 throttled``).

    A spent budget with a known reset time (``Retry-After`` or ``X-RateLimit-Reset`` on the throttled
    answer, else Cloud 66's documented "until the next hour") holds every call until then, within
    ``max_rate_limit_wait``. An answer that says ``X-RateLimit-Remaining: 0`` but not when the budget
    resets does not hold calls: the next call is sent, and its ``503 throttled`` answer (which costs
    no budget) tells the reset. Guessing "the top of the hour" there would stall a task for up to an
    hour whenever Cloud 66's window is not the clock hour.
    """

    _shared: dict[str, RateBudget] = {}
    _shared_lock = threading.Lock()

    def __init__(self) -> None:
        self.reset_at: float | None = None

    @classmethod
    def shared(cls, base_url: str, token: str) -> RateBudget:
        """The process's one budget for this API URL and token (the token is kept only as a hash)."""
        key = hashlib.sha256(f"{base_url}\n{token}".encode()).hexdigest()
        with cls._shared_lock:
            budget = cls._shared.get(key)
            if budget is None:
                budget = cls._shared[key] = cls()
            return budget

    @classmethod
    def forget_shared(cls) -> None:
        """Forget every shared budget (tests: as if every window had reset)."""
        with cls._shared_lock:
            for budget in cls._shared.values():
                budget.reset_at = None

    def observe(self, outcome: Outcome, headers: Mapping[str, str]) -> None:
        if outcome.reset_at is not None:
            self.reset_at = outcome.reset_at
        elif outcome.page is not None and outcome.page.remaining == 0 and _announces_reset(headers):
            self.reset_at = budget_reset_at(headers)
        elif outcome.page is not None:
            self.reset_at = None

    def spent_until(self, now: float | None = None) -> float | None:
        """When the budget is known to be spent: the epoch second it resets; else None."""
        now = time.time() if now is None else now
        return self.reset_at if self.reset_at is not None and self.reset_at > now else None

    def wait_before(self, request: ApiRequest, policy: RetryPolicy, now: float | None = None) -> float:
        """Seconds to wait before sending; raises when the reset is further away than allowed."""
        now = time.time() if now is None else now
        reset_at = self.spent_until(now)
        if reset_at is None:
            return 0.0
        wait = reset_at - now
        if wait > policy.max_rate_limit_wait:
            raise Cloud66RateLimitError(
                f"{request.method} {request.path}: the Cloud 66 hourly request budget is spent; it resets at "
                f"{_utc(reset_at)}, later than the {policy.max_rate_limit_wait:.0f} s this call may wait.",
                reset_at=datetime.fromtimestamp(reset_at, UTC),
                method=request.method,
                path=request.path,
            )
        return wait


def _announces_reset(headers: Mapping[str, str]) -> bool:
    return _header(headers, "Retry-After") is not None or _header(headers, "X-RateLimit-Reset") is not None


class Attempts:
    """The retry loop's memory for one call: decides the pause after a failed attempt, or gives up."""

    def __init__(self, policy: RetryPolicy, budget: RateBudget) -> None:
        self.policy = policy
        self.budget = budget
        self.count = 0
        self.started = time.monotonic()

    def delay_after(self, request: ApiRequest, outcome: Outcome) -> float:
        """Seconds to sleep before the next attempt; raises ``outcome.error`` when there is none."""
        assert outcome.error is not None
        self.count += 1
        if not outcome.retryable or self.count >= self.policy.max_attempts:
            raise outcome.error
        if outcome.reset_at is not None:
            delay = self.budget.wait_before(request, self.policy) + random.uniform(0, 1)
        else:
            delay = self.policy.backoff(self.count)
            if outcome.retry_after is not None:
                if outcome.retry_after > self.policy.max_rate_limit_wait:
                    raise outcome.error
                delay = max(delay, outcome.retry_after)
        if time.monotonic() - self.started + delay > self.policy.total_timeout:
            raise outcome.error
        return delay


class RetryState:
    """The failures of one operation that keeps trying from its first failure, under a policy.

    For the copy engine's byte ranges and S3 calls: their ``total_timeout`` counts from the first
    failure, not from the start, since a long download may fail after it has run for an hour.
    """

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.failures = 0
        self._first = 0.0

    @property
    def spent(self) -> float:
        """Seconds since the first failure."""
        return time.monotonic() - self._first if self._first else 0.0

    def gives_up(self) -> bool:
        """Count a failure; True once the policy's attempts or its time are used up."""
        self.failures += 1
        self._first = self._first or time.monotonic()
        return self.failures >= self.policy.max_attempts or self.spent > self.policy.total_timeout

    def delay(self, retry_after: float | None = None) -> float:
        """The pause before the next try: the policy's backoff, or the server's ``Retry-After`` when
        longer (up to ``backoff_max``)."""
        delay = self.policy.backoff(self.failures)
        return max(delay, min(retry_after, self.policy.backoff_max)) if retry_after is not None else delay


# --- one call and one paged read, as steps without I/O -------------------------------------------
# The hook drives these generators with ``requests`` (sync) or ``aiohttp`` (triggers): a driver
# only sends what a step asks for and sleeps as long as it says, so there is one retry loop and
# one paging loop for both.


@dataclass(frozen=True)
class Send:
    """Step: send the request once and answer with an :class:`Answer`."""

    request: ApiRequest


@dataclass(frozen=True)
class Sleep:
    """Step: wait this long before sending ``request`` (a driver with a cancel event gives up
    instead when it is set).

    :param after: the error that made the call wait, logged by the driver (None: a budget wait).
    :param attempt: the attempt that follows.
    """

    seconds: float
    request: ApiRequest
    after: Cloud66ApiError | None = None
    attempt: int = 1


@dataclass(frozen=True)
class Answer:
    """What one send came to: an HTTP answer, or the transport's exception."""

    status: int = 0
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    failure: BaseException | None = None
    maybe_sent: bool = True  # with a failure: False only when the request certainly never left


@dataclass(frozen=True)
class Done:
    """The steps have ended: ``value`` is what they return (a page, or every record of a read)."""

    value: Any


Steps = Generator[Send | Sleep, Answer | None, Any]
CallSteps = Generator[Send | Sleep, Answer | None, Page]


def advance(steps: Steps, answer: Answer | None) -> Send | Sleep | Done:
    """The step after ``answer`` (None after a Sleep), or :class:`Done`: all a driver loops on."""
    try:
        return steps.send(answer)
    except StopIteration as done:
        return Done(done.value)


def call(request: ApiRequest, policy: RetryPolicy, budget: RateBudget) -> CallSteps:
    """One API call under the shared retry policy and rate budget; returns its page or raises."""
    attempts = Attempts(policy, budget)
    while True:
        yield Sleep(budget.wait_before(request, policy), request, attempt=attempts.count + 1)
        answer = yield Send(request)
        assert answer is not None, "a driver answers every Send"
        if answer.failure is not None:
            outcome = transport_failure(request, answer.failure, maybe_sent=answer.maybe_sent)
        else:
            outcome = interpret(request, answer.status, answer.headers, answer.body)
            budget.observe(outcome, answer.headers)
        if outcome.page is not None:
            return outcome.page
        delay = attempts.delay_after(request, outcome)
        yield Sleep(delay, request, after=outcome.error, attempt=attempts.count + 1)


PageSteps = Generator[ApiRequest, Page, list[Any]]


def read_pages(
    request: ApiRequest,
    parse: Callable[[Any], list[Any]],
    *,
    read_on: Callable[[list[Any]], bool] | None = None,
    max_pages: int = MAX_PAGES,
) -> PageSteps:
    """A paged read: yields each page's request, receives its page, returns every parsed record.

    Without ``read_on`` it reads while the API says another page follows (up to ``max_pages``, then
    it fails rather than loop forever); with it, page 1 and then further pages only while
    ``read_on(records so far)`` asks for them, up to ``max_pages``.
    """
    records: list[Any] = []
    for number in range(1, max(1, max_pages) + 1):
        page = yield request.with_page(number)
        records += parse(page.response)
        more = bool(page.has_next and page.response)
        if not more or (read_on is not None and not read_on(records)):
            return records
    if read_on is None:
        raise Cloud66ApiError(f"{request.method} {request.path}: more than {max_pages} pages; giving up")
    return records


def paged(
    steps: PageSteps, policy: RetryPolicy, budget: RateBudget
) -> Generator[Send | Sleep, Answer | None, list[Any]]:
    """A paged read whose every page is one :func:`call`: the steps a driver runs for the whole read."""
    page: Page | None = None
    while True:
        try:
            request = steps.send(page)  # type: ignore[arg-type]  # the first send starts the generator
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        page = yield from call(request, policy, budget)
