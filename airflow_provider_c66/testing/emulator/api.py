"""The Cloud 66 v3 API under ``/api/3``: authentication, scopes, the rate budget, then the router.

:meth:`_Api._api` answers one API request: the bearer token and its scopes, the token's budget
(:mod:`.budget`), then :meth:`_Api.route_api`, the router a subclass may override, which reads the
state, pages lists (:data:`PER_PAGE` a page) and queues backup tasks.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from random import Random
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_c66.testing.emulator.budget import _Budget
from airflow_provider_c66.testing.emulator.files import _Files
from airflow_provider_c66.testing.emulator.replies import (
    _ApiError,
    _error_reply,
    _json_body,
    _NotFound,
    _Reply,
)
from airflow_provider_c66.testing.emulator.state import API_PREFIX, DB_TYPES, _Pending

PER_PAGE = 30


def _int_param(params: Mapping[str, Any], name: str, *, minimum: int | None = None) -> int | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    try:
        if isinstance(value, bool):
            raise ValueError
        number = int(value)
    except (TypeError, ValueError):
        raise _ApiError(
            400, "bad_request", "The request has invalid parameters", f"{name} must be an integer"
        ) from None
    if minimum is not None and number < minimum:
        raise _ApiError(
            400, "bad_request", "The request has invalid parameters", f"{name} must be >= {minimum}"
        )
    return number


def _bool_param(params: Mapping[str, Any], name: str) -> bool | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise _ApiError(400, "bad_request", "The request has invalid parameters", f"{name} must be true or false")


def _db_types(value: Any, *, allow_all: bool) -> list[str]:
    allowed = (*DB_TYPES, "all") if allow_all else DB_TYPES
    names = [part.strip().lower() for part in str(value).split(",") if part.strip()]
    bad = [name for name in names if name not in allowed]
    if not names or bad:
        raise _ApiError(
            400,
            "bad_request",
            "The request has invalid parameters",
            f"db_type {str(value)!r} is invalid: valid options are {', '.join(allowed)}",
        )
    return names


def _paginate(items: list[Any], params: Mapping[str, str]) -> dict[str, Any]:
    page = _int_param(params, "page", minimum=1) or 1
    pages = max(1, math.ceil(len(items) / PER_PAGE))
    return {
        "response": items[(page - 1) * PER_PAGE : page * PER_PAGE],
        "count": len(items),
        "pagination": {
            "previous": page - 1 if page > 1 else None,
            "next": page + 1 if page < pages else None,
            "current": page,
            "per_page": PER_PAGE,
            "count": len(items),
            "pages": pages,
        },
    }


class _Api(_Budget, _Files):
    """The API: :meth:`route_api` (public, overridable) behind authentication and the budget."""

    backup_delay: float
    backup_outcome: str
    new_backup_size: int

    def _api(
        self,
        method: str,
        path: str,
        params: dict[str, Any],
        headers: Mapping[str, str],
        *,
        bad_body: bool = False,
    ) -> _Reply:
        if path != API_PREFIX and not path.startswith(API_PREFIX + "/"):
            return _error_reply(_ApiError(404, "not_found", f"No route matches {path!r}"), ())
        auth = headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        token = token.strip()
        with self._lock:
            scopes = self._tokens.get(token) if scheme.lower() == "bearer" and token else None
        if scopes is None:
            error = _ApiError(401, "unauthorized", "The access token is missing, invalid or revoked")
            return _error_reply(
                error, [("WWW-Authenticate", 'Bearer realm="Cloud 66", error="invalid_token"')]
            )
        charge = self._charge(token)
        if charge.throttled:
            error = _ApiError(503, "throttled", "Too many requests: the hourly API limit is exhausted")
            reply = _error_reply(error, charge.headers)
        elif bad_body:
            error = _ApiError(400, "bad_request", "The request body is not valid JSON")
            reply = _error_reply(error, charge.headers)
        else:
            reply = self._routed(method, path, params, scopes, charge.headers)
        reply.budget_window = charge.window
        return reply

    def _routed(
        self,
        method: str,
        path: str,
        params: dict[str, Any],
        scopes: tuple[str, ...],
        rate: list[tuple[str, str]],
    ) -> _Reply:
        """The answer of :meth:`route_api` (or its error) to a counted request, with the ``rate`` headers."""
        route = path[len(API_PREFIX) :]
        if route.endswith(".json"):
            route = route[: -len(".json")]
        segments = [seg for seg in route.split("/") if seg]
        try:
            with self._lock:
                self._materialize()
                payload = self.route_api(method, segments, params, scopes)
        except _ApiError as error:
            return _error_reply(error, rate)
        return _Reply.of(200, _json_body(payload), "application/json; charset=utf-8", rate)

    def route_api(
        self, method: str, segments: list[str], params: dict[str, Any], scopes: tuple[str, ...]
    ) -> Any:
        """Answer an authenticated, counted API request: the JSON payload of a 200, or raise the error.

        ``segments`` is the path after ``/api/3`` without ``.json``, split on ``/``. Called with the
        lock held; a subclass may override it to change answers (``super().route_api(...)`` first).
        """
        read = method in ("GET", "HEAD")
        if read and "public" not in scopes:
            raise _ApiError(403, "insufficient_scope", "This action requires the 'public' scope")
        match segments:
            case ["ping", "auth"] if read:
                return {"response": {"ok": True, "message": "pong"}}
            case ["stacks"] if read:
                return _paginate([self._stack_record(s) for s in self._stacks.values()], params)
            case ["stacks", uid] if read:
                return {"response": self._stack_record(self._stack(uid))}
            case ["stacks", uid, "backups"] if read:
                return self._list_backups(uid, params)
            case ["stacks", uid, "backups"] if method == "POST":
                if "admin" not in scopes:
                    raise _ApiError(403, "insufficient_scope", "This action requires the 'admin' scope")
                return self._post_backups(uid, params)
            case ["stacks", uid, "backups", backup_id] if read:
                return {"response": self._record(self._backup(uid, self._backup_id(uid, backup_id)))}
            case ["stacks", uid, "backups", backup_id, "files"] if read:
                backup = self._backup(uid, self._backup_id(uid, backup_id))
                parts = self._files(backup)
                order = list(range(len(parts)))
                if len(parts) > 1:
                    # Scrambled (deterministically) so clients must sort parts by suffix themselves.
                    Random(backup.id).shuffle(order)
                    if order == sorted(order):
                        order.reverse()
                items = [{"id": parts[i].id, "name": parts[i].name} for i in order]
                return _paginate(items, params)
            case ["stacks", uid, "backups", backup_id, "files", file_id] if read:
                backup = self._backup(uid, self._backup_id(uid, backup_id))
                url = self.sign_url(backup, self._file(backup, file_id))
                # The real API double-encodes every % of the signed URL.
                return {"response": {"ok": True, "public_url": url.replace("%", "%25")}}
        raise _NotFound(f"No route matches {method} {API_PREFIX}/{'/'.join(segments)}")

    def _backup_id(self, stack_uid: str, text: str) -> int:
        self._stack(stack_uid)
        if not text.isdigit():
            raise _NotFound(f"Backup '{text}' not found in stack '{stack_uid}'")
        return int(text)

    def _list_backups(self, uid: str, params: Mapping[str, Any]) -> Any:
        self._stack(uid)
        backups = self._sorted_backups(uid)
        if params.get("db_type"):
            types = _db_types(params["db_type"], allow_all=True)
            if "all" not in types:
                backups = [b for b in backups if b.db_type in types]
        group = _int_param(params, "group")
        if group is not None:
            backups = [b for b in backups if b.group == group]
        return _paginate([self._record(b) for b in backups], params)

    def _post_backups(self, uid: str, params: Mapping[str, Any]) -> Any:
        stack = self._stack(uid)
        due = time.time() + self.backup_delay
        gzip = _bool_param(params, "gzip")
        size = self.new_backup_size
        if params.get("remote_url"):
            group = _int_param(params, "group")
            if group is None:
                raise _ApiError(400, "bad_request", "The request has invalid parameters", "group is required")
            if not params.get("db_type"):
                raise _ApiError(
                    400, "bad_request", "The request has invalid parameters", "db_type is required"
                )
            types = _db_types(params["db_type"], allow_all=False)
            if len(types) != 1:
                detail = "an import takes exactly one db_type"
                raise _ApiError(400, "bad_request", "The request has invalid parameters", detail)
            names = [name for db_type, name in stack.databases if db_type == types[0]]
            stem = urlsplit(str(params["remote_url"])).path.rsplit("/", 1)[-1].split(".", 1)[0]
            name = names[0] if names else (stem or "imported_db")
            self._pending.append(
                _Pending(due, uid, types[0], name, group, self.backup_outcome, size, bool(gzip), "")
            )
            return {"response": {"ok": True, "message": "Your external backup queued for upload"}}
        types = _db_types(params.get("db_type") or "all", allow_all=True)
        frequency = params.get("frequency")
        if frequency is not None and len(str(frequency).split()) != 5:
            detail = "frequency must be a cron schedule with 5 fields"
            raise _ApiError(400, "bad_request", "The request has invalid parameters", detail)
        _int_param(params, "keep_count", minimum=1)
        _bool_param(params, "run_on_replica_server")
        skip = str(params.get("excluded_tables") or "")
        for db_type, name in stack.databases:
            if "all" in types or db_type in types:
                self._pending.append(
                    _Pending(
                        due, uid, db_type, name, None, self.backup_outcome, size, gzip is not False, skip
                    )
                )
        return {"response": {"ok": True, "message": "queued for creation"}}
