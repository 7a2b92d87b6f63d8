"""Cloud66Hook: the one place that talks to the Cloud 66 v3 Backups API.

Each endpoint method names a path and parses a record; transport, retries, throttling and error
mapping live in :mod:`airflow_provider_c66.api` and are driven by :meth:`Cloud66Hook._request`
(``requests``) or :meth:`Cloud66Hook._arequest` (``aiohttp``, for triggers).
"""

from __future__ import annotations

import asyncio
import copy
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypedDict, Unpack
from urllib.parse import urlsplit

import requests
import urllib3.exceptions

from airflow_provider_c66 import api, validation
from airflow_provider_c66.api import ApiRequest, RateBudget, RetryPolicy, segment
from airflow_provider_c66.exceptions import (
    Cloud66ApiError,
    Cloud66AuthError,
    Cloud66CancelledError,
    Cloud66InputError,
)
from airflow_provider_c66.models import Backup, BackupFile, Stack, parse_records
from airflow_provider_c66.redaction import mask_credential, redact_text, redact_url

try:
    from airflow.providers.common.compat.sdk import BaseHook
except ImportError:  # pragma: no cover - older common-compat
    from airflow.sdk import BaseHook

if TYPE_CHECKING:
    import aiohttp

DEFAULT_TIMEOUT = 60.0
CONNECT_TIMEOUT = 10.0


_TASK_CHECKS: dict[str, Callable[[Any], Any]] = {
    "frequency": validation.cron,
    "keep_count": validation.keep_count,
    "gzip": lambda value: validation.flag(value, "gzip"),
    "excluded_tables": validation.table_names,
    "run_on_replica_server": lambda value: validation.flag(value, "run_on_replica_server"),
}
"""Each optional backup task setting and the check that reads it into its POST body value."""


class LatestQuery(TypedDict, total=False):
    """What :meth:`Cloud66Hook.latest_backups` and its async twin read (see there)."""

    db_type: str | None
    group: int | str | None
    read_on: Callable[[list[Backup]], bool] | None
    max_pages: int


class BackupTask(TypedDict, total=False):
    """A backup task's settings, as :meth:`Cloud66Hook.create_backup_task` takes them (see there)."""

    db_type: str | Sequence[str]
    frequency: str | None
    keep_count: int | str | None
    gzip: bool | str | None
    excluded_tables: str | Sequence[str] | None
    run_on_replica_server: bool | str | None


class Cloud66Hook(BaseHook):  # type: ignore[misc]
    """Interact with the Cloud 66 v3 Backups API.

    The connection's password is the access token (scope ``public`` to read, ``admin`` to create
    or import backups); its host is the API base URL (default ``https://app.cloud66.com/api/3``).
    Extras: ``account_id`` (sent as ``X-Account``) and ``timeout`` (read timeout in seconds).

    :param cloud66_conn_id: the Airflow connection id.
    :param retry_policy: how hard each call tries; see :class:`~airflow_provider_c66.api.RetryPolicy`.
    :param cancel: when set (a task's ``on_kill``), a call waiting between attempts or for the rate
        budget gives up at once with :class:`~airflow_provider_c66.exceptions.Cloud66CancelledError`.
    """

    conn_name_attr = "cloud66_conn_id"
    default_conn_name = "cloud66_default"
    conn_type = "cloud66"
    hook_name = "Cloud 66"

    def __init__(
        self,
        cloud66_conn_id: str = default_conn_name,
        *,
        retry_policy: RetryPolicy | None = None,
        max_rate_limit_wait: float | None = None,
        cancel: threading.Event | None = None,
    ) -> None:
        super().__init__()
        self.cloud66_conn_id = cloud66_conn_id
        policy = retry_policy or RetryPolicy()
        if max_rate_limit_wait is not None:
            policy = replace(policy, max_rate_limit_wait=max_rate_limit_wait)
        self.retry_policy = policy
        self.cancel = cancel
        self._budget: RateBudget | None = None
        self._session: requests.Session | None = None
        self._settings: _Settings | None = None

    # --- Airflow UI ---------------------------------------------------------------------------
    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        from airflow_provider_c66.get_provider_info import CONNECTION_FORM

        return copy.deepcopy(CONNECTION_FORM)

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """The extra fields as wtforms widgets, for Airflow releases before 3.2 (which read these, when
        wtforms is installed, instead of the provider info's ``conn-fields``); built from the same
        CONNECTION_FIELDS, so the two forms cannot drift apart."""
        from wtforms import IntegerField, StringField
        from wtforms.validators import NumberRange, Optional

        from airflow_provider_c66.get_provider_info import CONNECTION_FIELDS

        widgets: dict[str, Any] = {}
        for name, field in CONNECTION_FIELDS.items():
            schema = field["schema"]
            if "integer" in schema["type"]:
                widgets[name] = IntegerField(
                    field["label"],
                    description=field["description"],
                    default=schema.get("default"),
                    validators=[
                        Optional(),
                        NumberRange(min=schema.get("minimum"), max=schema.get("maximum")),
                    ],
                )
            else:
                widgets[name] = StringField(field["label"], description=field["description"])
        return widgets

    # --- connection -----------------------------------------------------------------------------
    def _load_settings(self, conn: Any, extra: Any = None) -> _Settings:
        return _Settings.from_connection(conn, self.cloud66_conn_id, extra)

    @property
    def settings(self) -> _Settings:
        if self._settings is None:
            self._settings = self._load_settings(self.get_connection(self.cloud66_conn_id))
        return self._settings

    @property
    def budget(self) -> RateBudget:
        """The hourly request budget shared with every hook of this process using the same URL and token."""
        if self._budget is None:
            self._budget = RateBudget.shared(self.settings.base_url, self.settings.token)
        return self._budget

    def get_conn(self) -> requests.Session:
        """The hook's one ``requests.Session``: auth, headers and connection reuse for every call."""
        if self._session is None:
            session = requests.Session()
            session.headers.update(self.settings.headers)
            self._session = session
        return self._session

    # --- transport: drivers of the I/O-free steps in api.py ------------------------------------------
    def _request(self, request: ApiRequest) -> api.Page:
        """Send one call with the shared retry policy; return the decoded envelope or raise."""
        return self._drive(api.call(request, self.retry_policy, self.budget))  # type: ignore[no-any-return]

    def _read(self, steps: api.PageSteps) -> list[Any]:
        """A paged read, each page one call."""
        return self._drive(api.paged(steps, self.retry_policy, self.budget))  # type: ignore[no-any-return]

    def _drive(self, steps: api.Steps) -> Any:
        """Run I/O-free steps with ``requests``: send what a step asks, sleep as long as it says."""
        step = api.advance(steps, None)
        while not isinstance(step, api.Done):
            step = api.advance(steps, self._carry_out(step))
        return step.value

    def _carry_out(self, step: api.Send | api.Sleep) -> api.Answer | None:
        if isinstance(step, api.Send):
            return self._send(step.request)
        self._pause(step)
        return None

    def _send(self, request: ApiRequest) -> api.Answer:
        settings = self.settings
        try:
            response = self.get_conn().request(
                request.method,
                request.url(settings.base_url),
                params=dict(request.params) or None,
                json=request.body,
                timeout=(CONNECT_TIMEOUT, settings.timeout),
                allow_redirects=False,
            )
            return api.Answer(response.status_code, response.headers, response.content)
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
            return api.Answer(failure=exc, maybe_sent=_maybe_sent(exc))

    def _log_retry(self, step: api.Sleep) -> None:
        if step.after is not None:
            self.log.warning("%s; retrying in %.1f s (attempt %d)", step.after, step.seconds, step.attempt)

    def _pause(self, step: api.Sleep) -> None:
        """Sleep before an attempt; with a ``cancel`` event, give up as soon as it is set."""
        self._log_retry(step)
        if self.cancel is None:
            time.sleep(step.seconds)
        elif self.cancel.wait(step.seconds) or self.cancel.is_set():
            request = step.request
            raise Cloud66CancelledError(
                f"{request.method} {request.path}: given up, the task is being stopped",
                method=request.method,
                path=request.path,
            )

    async def _arequest(self, request: ApiRequest, session: aiohttp.ClientSession) -> api.Page:
        """The async twin of :meth:`_request`: the same steps, only the I/O differs."""
        return await self._adrive(api.call(request, self.retry_policy, self.budget), session)  # type: ignore[no-any-return]

    async def _aread(self, steps: api.PageSteps, session: aiohttp.ClientSession) -> list[Any]:
        return await self._adrive(api.paged(steps, self.retry_policy, self.budget), session)  # type: ignore[no-any-return]

    async def _adrive(self, steps: api.Steps, session: aiohttp.ClientSession) -> Any:
        """Run I/O-free steps with ``aiohttp`` (the sync driver's twin; a sync loop cannot await)."""
        step = api.advance(steps, None)
        while not isinstance(step, api.Done):
            step = api.advance(steps, await self._acarry_out(step, session))
        return step.value

    async def _acarry_out(
        self, step: api.Send | api.Sleep, session: aiohttp.ClientSession
    ) -> api.Answer | None:
        if isinstance(step, api.Send):
            return await self._asend(step.request, session)
        self._log_retry(step)
        await asyncio.sleep(step.seconds)
        return None

    async def _asend(self, request: ApiRequest, session: aiohttp.ClientSession) -> api.Answer:
        import aiohttp

        settings = self.settings
        try:
            async with session.request(
                request.method,
                request.url(settings.base_url),
                params={k: str(v) for k, v in request.params.items()} or None,
                json=request.body,
                headers=settings.headers,
                timeout=aiohttp.ClientTimeout(sock_connect=CONNECT_TIMEOUT, sock_read=settings.timeout),
                allow_redirects=False,
            ) as response:
                return api.Answer(response.status, dict(response.headers), await response.read())
        except (TimeoutError, aiohttp.ClientError) as exc:
            connect_failed = isinstance(exc, (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError))
            return api.Answer(failure=exc, maybe_sent=not connect_failed)

    async def aload_settings(self) -> None:
        """Look the connection up without blocking the event loop (triggers call this first)."""
        if self._settings is None:
            # Before Airflow 3.3.2 aget_connection and extra_dejson mask secrets with a blocking call
            # to the supervisor (DeadlockImminentError in a busy triggerer); common-compat avoids it.
            from airflow.providers.common.compat.connection import (
                get_async_connection,
                get_async_extra_dejson,
            )

            conn = await get_async_connection(self.cloud66_conn_id, hook=self)
            self._settings = self._load_settings(conn, await get_async_extra_dejson(conn))

    # --- requests, built once for the sync and async paths ------------------------------------------
    @staticmethod
    def backups_request(
        stack_id: str, *, db_type: str | None = None, group: int | str | None = None
    ) -> ApiRequest:
        """The list call, validated; shared with the trigger so both poll exactly the same way."""
        stack = validation.stack_id(stack_id)
        params: dict[str, str | int] = {}
        if db_type is not None:
            params["db_type"] = validation.db_type(db_type)
        if group is not None:
            params["group"] = validation.group(group)
        return ApiRequest("GET", f"/stacks/{segment(stack)}/backups.json", params, subject=f"stack {stack!r}")

    @staticmethod
    def newest_first(backups: Sequence[Backup]) -> list[Backup]:
        return sorted(backups, key=lambda b: (b.backup_date, b.id), reverse=True)

    # --- endpoints ------------------------------------------------------------------------------
    def list_backups(
        self, stack_id: str, *, db_type: str | None = None, group: int | str | None = None
    ) -> list[Backup]:
        """Every backup of a stack (all pages), newest first by backup date.

        :param stack_id: the stack UID.
        :param db_type: only this database type (mysql, postgresql, redis, mongodb).
        :param group: only this backup group id.
        """
        request = self.backups_request(stack_id, db_type=db_type, group=group)
        return self.newest_first(self._read(api.read_pages(request, _backups)))

    def latest_backups(self, stack_id: str, **query: Unpack[LatestQuery]) -> list[Backup]:
        """The newest backups, newest first: page 1 only (one request, for polling within the rate
        budget), then further pages while ``read_on(backups so far)`` asks for older ones, up to
        ``max_pages`` in all.

        :param db_type: only this database type.
        :param group: only this backup group id.
        :param read_on: asked with the backups read so far whether to read the next page.
        :param max_pages: the most pages read (default 1).
        """
        return self.newest_first(self._read(self._latest_read(stack_id, **query)))

    async def alatest_backups(
        self, session: aiohttp.ClientSession, stack_id: str, **query: Unpack[LatestQuery]
    ) -> list[Backup]:
        """Async :meth:`latest_backups` for triggers."""
        await self.aload_settings()
        return self.newest_first(await self._aread(self._latest_read(stack_id, **query), session))

    def _latest_read(
        self,
        stack_id: str,
        *,
        db_type: str | None = None,
        group: int | str | None = None,
        read_on: Callable[[list[Backup]], bool] | None = None,
        max_pages: int = 1,
    ) -> api.PageSteps:
        """A polling list read: page 1 (one request), further pages only while ``read_on`` asks."""
        request = self.backups_request(stack_id, db_type=db_type, group=group)
        return api.read_pages(request, _backups, read_on=read_on or (lambda _: False), max_pages=max_pages)

    def get_backup(self, stack_id: str, backup_id: int | str) -> Backup:
        """One backup by id."""
        stack, ident = validation.stack_id(stack_id), validation.backup_id(backup_id)
        request = ApiRequest(
            "GET",
            f"/stacks/{segment(stack)}/backups/{ident}.json",
            subject=f"backup {ident} of stack {stack!r}",
        )
        return Backup.from_api(self._request(request).response)

    def create_backup_task(self, stack_id: str, **task: Unpack[BackupTask]) -> str:
        """Create a scheduled backup task (needs the ``admin`` scope); returns the API's message.

        Cloud 66 answers with no backup id: watch :meth:`list_backups` for a newer backup instead.

        :param db_type: ``all`` (the default), one type, or a list of mysql/postgresql/redis/mongodb.
        :param frequency: a 5-field cron expression, e.g. ``0 */1 * * *``.
        :param keep_count: how many previous backups Cloud 66 keeps.
        :param gzip: compress backups with gzip.
        :param excluded_tables: tables left out of the backup (a list or comma-separated).
        :param run_on_replica_server: back up from a replica when there is one.
        """
        return self._post_backups(validation.stack_id(stack_id), self.backup_task_body(**task))

    @staticmethod
    def backup_task_body(**task: Unpack[BackupTask]) -> dict[str, Any]:
        """The validated POST body of a backup task; operators call it to fail before any request.

        A setting left out (or None) is left out of the body, so Cloud 66 applies its own default.
        """
        unknown = sorted(set(task) - BackupTask.__optional_keys__)
        if unknown:
            allowed = ["db_type", *_TASK_CHECKS]
            raise TypeError(f"unexpected backup task settings {unknown}; the settings are {allowed}")
        body: dict[str, Any] = {"db_type": ",".join(validation.db_types(task.get("db_type", "all")))}
        for name, check in _TASK_CHECKS.items():
            value = task.get(name)
            if value is not None:
                body[name] = check(value)
        return body

    def import_backup(self, stack_id: str, *, group: int | str, db_type: str, remote_url: str) -> str:
        """Import an external backup into a backup group (needs ``admin``); returns the API's message.

        :param group: the backup group the imported backup joins.
        :param db_type: its database type.
        :param remote_url: where Cloud 66 downloads it from (https).
        """
        body = self.import_body(group=group, db_type=db_type, remote_url=remote_url)
        return self._post_backups(validation.stack_id(stack_id), body)

    @staticmethod
    def import_body(*, group: int | str, db_type: str, remote_url: str) -> dict[str, Any]:
        return {
            "group": validation.group(group),
            "db_type": validation.db_type(db_type),
            "remote_url": validation.url(remote_url, "remote_url"),
        }

    def _post_backups(self, stack: str, body: dict[str, Any]) -> str:
        request = ApiRequest(
            "POST", f"/stacks/{segment(stack)}/backups.json", body=body, subject=f"stack {stack!r}"
        )
        response = self._request(request).response
        if isinstance(response, dict) and response.get("ok") is False:
            raise Cloud66ApiError(f"POST {request.path}: Cloud 66 refused: {response.get('message', '')}")
        message = response.get("message") if isinstance(response, dict) else None
        # Cloud 66's own words may echo the import's signed remote_url (in any encoding): the message is
        # logged, kept in the task state store and returned as XCom, so it is redacted here.
        return redact_text(str(message or ""))

    def list_backup_files(self, stack_id: str, backup_id: int | str) -> list[BackupFile]:
        """Every file of a backup, in the order their bytes concatenate (``tar-aa`` before ``tar-ab``)."""
        stack, ident = validation.stack_id(stack_id), validation.backup_id(backup_id)
        request = ApiRequest(
            "GET",
            f"/stacks/{segment(stack)}/backups/{ident}/files.json",
            subject=f"backup {ident} of stack {stack!r}",
        )
        files = self._read(
            api.read_pages(request, lambda page: parse_records(BackupFile.from_api, page, "file"))
        )
        return sorted(files, key=lambda f: f.sort_key)

    def get_backup_file_url(self, stack_id: str, backup_id: int | str, file_id: str) -> str:
        """A short-lived signed GET URL for one backup file, with Cloud 66's ``%25`` quirk undone.

        The URL's query string is a credential: it is registered with Airflow's secrets masker, and
        this package logs such URLs only through :func:`~airflow_provider_c66.redaction.redact_url`.
        """
        stack, ident, fid = (
            validation.stack_id(stack_id),
            validation.backup_id(backup_id),
            validation.file_id(file_id),
        )
        request = ApiRequest(
            "GET",
            f"/stacks/{segment(stack)}/backups/{ident}/files/{segment(fid)}.json",
            subject=f"file {fid!r} of backup {ident} of stack {stack!r}",
        )
        response = self._request(request).response
        url = response.get("public_url") if isinstance(response, dict) else None
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            raise Cloud66ApiError(f"GET {request.path}: the answer has no usable 'public_url'")
        url = api.undo_percent_quirk(url)
        mask_credential(urlsplit(url).query)
        self.log.debug("Signed URL for file %s of backup %s: %s", fid, ident, redact_url(url))
        return url

    def list_stacks(self) -> list[Stack]:
        """Every stack the token can see (all pages), in the API's order."""
        request = ApiRequest("GET", "/stacks.json", subject="the stack list")
        return self._read(api.read_pages(request, lambda page: parse_records(Stack.from_api, page, "stack")))

    def get_stack(self, stack_id: str) -> dict[str, Any]:
        """A stack's record (uid, name, environment, status ...): a cheap check that the id exists."""
        stack = validation.stack_id(stack_id)
        response = self._request(
            ApiRequest("GET", f"/stacks/{segment(stack)}.json", subject=f"stack {stack!r}")
        ).response
        if not isinstance(response, dict):
            raise Cloud66ApiError(f"GET /stacks/{stack}.json: expected a stack object")
        return response

    def test_connection(self) -> tuple[bool, str]:
        """Check the URL and token with one cheap read; never raises, says what to fix."""
        try:
            base_url = self.settings.base_url
            page = self._request(ApiRequest("GET", "/stacks.json", {"page": 1}, subject="the stack list"))
        except Cloud66InputError as exc:
            return False, str(exc)
        except Cloud66AuthError as exc:
            if exc.status == 403:
                return (
                    False,
                    "The access token is valid but lacks the 'public' scope needed to read stacks and backups.",
                )
            return (
                False,
                "Cloud 66 rejected the access token: set the connection's password to a valid token.",
            )
        except Cloud66ApiError as exc:
            if exc.status == 404:
                return (
                    False,
                    f"No Cloud 66 API at {base_url}: the API URL should look like {api.DEFAULT_BASE_URL}.",
                )
            if exc.status is None:
                return False, f"Could not reach {base_url}: {exc}"
            return False, f"Cloud 66 answered an error: {exc}"
        except Exception as exc:
            return False, f"Connection test failed: {type(exc).__name__}: {redact_text(str(exc))}"
        count = len(page.response) if isinstance(page.response, list) else 0
        return (
            True,
            f"Connected to Cloud 66 at {base_url}; the token sees {count} stack(s) on the first page.",
        )


def _backups(page: Any) -> list[Backup]:
    return parse_records(Backup.from_api, page, "backup")


def _maybe_sent(exc: BaseException) -> bool:
    """False only when the request certainly never left: the connection could not be opened."""
    if isinstance(exc, requests.ConnectTimeout):
        return False
    reason = exc.args[0] if exc.args else None
    inner = getattr(reason, "reason", None)
    return not isinstance(inner, urllib3.exceptions.NewConnectionError)


class _Settings:
    """What the hook reads from its Airflow connection, checked once."""

    def __init__(self, base_url: str, token: str, account_id: str | None, timeout: float) -> None:
        self.base_url = base_url
        self.token = token
        self.timeout = timeout
        self.headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/json",
            "User-Agent": api.USER_AGENT,
        }
        if account_id:
            self.headers["X-Account"] = account_id

    def __repr__(self) -> str:  # never show the token
        return f"_Settings(base_url={self.base_url!r}, timeout={self.timeout})"

    @classmethod
    def from_connection(cls, conn: Any, conn_id: str, extra: Any = None) -> _Settings:
        token = (conn.password or "").strip()
        if not token:
            raise Cloud66InputError(
                f"connection {conn_id!r}", "has no access token: put a Cloud 66 access token in its password"
            )
        base_url = _base_url(conn.host, conn_id)
        extra = conn.extra_dejson if extra is None else extra
        extra = extra if isinstance(extra, dict) else {}
        timeout = _extra_field(extra, "timeout")
        timeout = DEFAULT_TIMEOUT if timeout in (None, "") else timeout
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float, str)):
            raise Cloud66InputError(
                f"connection {conn_id!r} extra 'timeout'", f"must be seconds, got {timeout!r}"
            )
        try:
            seconds = float(timeout)
        except ValueError:
            raise Cloud66InputError(
                f"connection {conn_id!r} extra 'timeout'", f"must be seconds, got {timeout!r}"
            ) from None
        if not 0 < seconds <= 3600:
            raise Cloud66InputError(
                f"connection {conn_id!r} extra 'timeout'", f"must be 1-3600 seconds, got {timeout!r}"
            )
        account = _extra_field(extra, "account_id")
        return cls(base_url, token, str(account) if account not in (None, "") else None, seconds)


def _extra_field(extra: dict[str, Any], name: str) -> Any:
    """An extra field as the connection form saves it (``name``), or as forms before Airflow 3 did
    (``extra__cloud66__<name>``)."""
    value = extra.get(name)
    return extra.get(f"extra__cloud66__{name}") if value in (None, "") else value


def _base_url(host: str | None, conn_id: str) -> str:
    if not host or not host.strip():
        return api.DEFAULT_BASE_URL
    text = host.strip().rstrip("/")
    if "://" not in text:
        text = "https://" + text
    parts = urlsplit(text)
    field = f"connection {conn_id!r} host"
    if parts.scheme not in ("https", "http") or not parts.hostname or parts.query or parts.fragment:
        raise Cloud66InputError(field, f"must be the API URL such as {api.DEFAULT_BASE_URL}, got {host!r}")
    if parts.scheme == "http" and not validation.is_loopback_host(parts.hostname):
        raise Cloud66InputError(
            field, f"must use https (plain http only to 127.0.0.1 or localhost), got {host!r}"
        )
    if parts.path in ("", "/"):
        text = text + "/api/3"
    return text
