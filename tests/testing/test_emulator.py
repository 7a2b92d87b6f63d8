"""The Cloud 66 emulator, exercised over real HTTP with plain ``requests`` and raw sockets.

Every other test trusts the emulator to behave like Cloud 66 and S3, so these pin its behaviour
exactly: envelopes, pagination, auth, rate limits, the signed-URL quirks, Range and every fault.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from airflow_provider_c66.testing import Cloud66Emulator, RecordedRequest
from airflow_provider_c66.testing import content as c66content
from airflow_provider_c66.testing.__main__ import main as cli_main
from airflow_provider_c66.testing.pytest_plugin import Cloud66EmulatorFactory

TOKEN = "test-token"
KIB = 1024
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
RECORD_KEYS = {
    "id",
    "server_uid",
    "db_type",
    "database_name",
    "file_base",
    "backup_date_iso",
    "backup_status",
    "backup_result",
    "restore_status",
    "restore_result",
    "created_at_iso",
    "updated_at_iso",
    "verify_status",
    "verify_result",
    "storage_path",
    "skip_tables",
    "backup_size",
    "logical_backup",
}


@pytest.fixture
def emu() -> Iterator[Cloud66Emulator]:
    with Cloud66Emulator(TOKEN, backup_delay=0.2) as emulator:
        emulator.add_stack(
            "stack-1", databases=[("mysql", "app_db"), ("redis", "cache"), ("postgresql", "pg")]
        )
        yield emulator


def call(
    emu: Cloud66Emulator, path: str, method: str = "GET", token: str | None = TOKEN, **kwargs: Any
) -> requests.Response:
    headers = dict(kwargs.pop("headers", {}))
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return requests.request(method, emu.base_url + path, headers=headers, timeout=10, **kwargs)


def file_url(emu: Cloud66Emulator, stack: str, backup_id: int, file_id: str) -> str:
    """The signed URL as a correct client uses it (the API's %25 double encoding undone)."""
    resp = call(emu, f"/stacks/{stack}/backups/{backup_id}/files/{file_id}.json")
    assert resp.status_code == 200, resp.text
    return str(resp.json()["response"]["public_url"]).replace("%25", "%")


def raw_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes, bool]:
    """GET over a bare socket, reading to EOF: (status, headers, every body byte, whether reset)."""
    parts = urlsplit(url)
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    request = f"GET {parts.path}?{parts.query} HTTP/1.1\r\nHost: {parts.netloc}\r\n{extra}\r\n"
    data = b""
    reset = False
    with socket.create_connection((parts.hostname or "", parts.port or 80), timeout=5) as sock:
        sock.sendall(request.encode())
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except ConnectionResetError:
            reset = True
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    fields = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), fields, body, reset


# -- API basics --------------------------------------------------------------------------------------


def test_plugin_fixture_starts_emulator_and_sets_connection(cloud66_emulator: Cloud66Emulator) -> None:
    conn = json.loads(os.environ["AIRFLOW_CONN_CLOUD66_DEFAULT"])
    assert conn == {"conn_type": "cloud66", "host": cloud66_emulator.base_url, "password": "test-token"}
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/api/3", cloud66_emulator.base_url)
    resp = requests.get(
        conn["host"] + "/stacks/stack-1.json",
        headers={"Authorization": f"Bearer {conn['password']}"},
        timeout=5,
    )
    assert resp.json()["response"]["uid"] == "stack-1"


def test_factory_fixture_custom_settings(cloud66_emulator_factory: Cloud66EmulatorFactory) -> None:
    emu = cloud66_emulator_factory(stacks=["a", "b"], conn_id="c66_other", token="other", hourly_budget=7)
    assert json.loads(os.environ["AIRFLOW_CONN_C66_OTHER"])["password"] == "other"
    resp = call(emu, "/stacks.json", token="other")
    assert [s["uid"] for s in resp.json()["response"]] == ["a", "b"]
    assert resp.headers["X-RateLimit-Limit"] == "7"


def test_paths_work_with_and_without_json_suffix(emu: Cloud66Emulator) -> None:
    backup_id = emu.add_backup("stack-1")
    for path in [
        "/ping/auth",
        "/stacks",
        "/stacks/stack-1",
        "/stacks/stack-1/backups",
        f"/stacks/stack-1/backups/{backup_id}",
        f"/stacks/stack-1/backups/{backup_id}/files",
    ]:
        plain, suffixed = call(emu, path), call(emu, path + ".json")
        assert plain.status_code == suffixed.status_code == 200, path
        assert plain.json() == suffixed.json(), path
        assert plain.headers["Content-Type"].startswith("application/json")
    assert call(emu, "/ping/auth.json").json()["response"]["ok"] is True
    stack = call(emu, "/stacks/stack-1.json").json()["response"]
    assert {"uid", "name", "environment", "status", "health", "account_id"} <= stack.keys()
    assert stack["uid"] == "stack-1"


def test_backups_pagination_over_three_pages_newest_first(emu: Cloud66Emulator) -> None:
    base = datetime(2024, 1, 1, tzinfo=UTC)
    # Insert in scrambled date order so that id order and date order disagree.
    ids_by_date = {}
    for i in sorted(range(70), key=lambda k: (k * 37) % 70):
        ids_by_date[i] = emu.add_backup("stack-1", backup_date=base + timedelta(minutes=i))
    expected = [ids_by_date[i] for i in reversed(range(70))]
    seen: list[int] = []
    page: int | None = 1
    pages = []
    while page is not None:
        body = call(emu, "/stacks/stack-1/backups.json", params={"page": page}).json()
        pages.append(body)
        seen += [r["id"] for r in body["response"]]
        page = body["pagination"]["next"]
    assert seen == expected
    assert [len(p["response"]) for p in pages] == [30, 30, 10]
    assert [p["pagination"] for p in pages] == [
        {"previous": prev, "next": nxt, "current": cur, "per_page": 30, "count": 70, "pages": 3}
        for prev, nxt, cur in [(None, 2, 1), (1, 3, 2), (2, None, 3)]
    ]
    assert all(p["count"] == 70 for p in pages)
    beyond = call(emu, "/stacks/stack-1/backups.json", params={"page": 4}).json()
    assert beyond["response"] == [] and beyond["pagination"]["next"] is None
    assert emu.backups("stack-1")[0]["id"] == expected[0]


def test_backup_filters_and_bad_parameters(emu: Cloud66Emulator) -> None:
    a = emu.add_backup("stack-1", db_type="mysql", group=1)
    b = emu.add_backup("stack-1", db_type="redis", database_name="cache", group=2)
    c = emu.add_backup("stack-1", db_type="mysql", group=3)

    def ids(**params: Any) -> list[int]:
        resp = call(emu, "/stacks/stack-1/backups.json", params=params)
        assert resp.status_code == 200, resp.text
        return sorted(r["id"] for r in resp.json()["response"])

    assert ids(db_type="mysql") == [a, c]
    assert ids(db_type="redis") == [b]
    assert ids(db_type="all") == [a, b, c]
    assert ids(group=3) == [c]
    assert ids(db_type="mysql", group=2) == []
    for params in ({"db_type": "oracle"}, {"group": "abc"}, {"page": "0"}, {"page": "x"}):
        resp = call(emu, "/stacks/stack-1/backups.json", params=params)
        assert resp.status_code == 400, params
        body = resp.json()
        assert body["error"] == "bad_request" and body["error_description"] and body["details"], body
    assert "oracle" in call(emu, "/stacks/stack-1/backups", params={"db_type": "oracle"}).json()["details"]


def test_backup_record_has_every_reference_field(emu: Cloud66Emulator) -> None:
    date = datetime(2014, 9, 1, 19, 0, 33, 123456, tzinfo=UTC)
    backup_id = emu.add_backup(
        "stack-1", size=4321, backup_date=date, extra_fields={"surprise": [1], "verify_status": "weird"}
    )
    record = call(emu, f"/stacks/stack-1/backups/{backup_id}.json").json()["response"]
    assert RECORD_KEYS | {"surprise"} == record.keys()
    assert record["backup_date_iso"] == record["created_at_iso"] == "2014-09-01T19:00:33Z"
    assert ISO_Z.match(record["updated_at_iso"])
    assert record["backup_size"] == 4321
    assert (record["backup_status"], record["backup_result"], record["restore_result"]) == (0, "", None)
    assert record["verify_status"] == "weird" and record["surprise"] == [1]
    assert record["storage_path"].endswith(f"/mysql/app_db_{backup_id}/2014.09.01.19.00.31")
    # As documented, a record names no group; an emulator told to (record_group=True) adds one.
    assert (
        record["logical_backup"] is True and "group" not in record and emu.group_of("stack-1", backup_id) == 1
    )
    assert emu.backups("stack-1") == [record]
    emu.record_group = True
    assert emu.backups("stack-1")[0]["group"] == 1
    emu.record_group = False
    naive = emu.add_backup("stack-1", backup_date=datetime(2020, 5, 6, 7, 8, 9))
    assert emu.backups("stack-1")[0]["id"] == naive
    assert emu.backups("stack-1")[0]["backup_date_iso"] == "2020-05-06T07:08:09Z"


def test_unauthorized_and_scopes(emu: Cloud66Emulator) -> None:
    for token, headers in [(None, {}), ("wrong", {}), (None, {"Authorization": f"Token {TOKEN}"})]:
        resp = call(emu, "/stacks/stack-1.json", token=token, headers=headers)
        assert resp.status_code == 401
        assert resp.json()["error"] == "unauthorized" and resp.json()["error_description"]
    emu.add_token("reader", ("public",))
    assert call(emu, "/stacks/stack-1/backups.json", token="reader").status_code == 200
    denied = call(emu, "/stacks/stack-1/backups.json", "POST", token="reader", json={"db_type": "mysql"})
    assert denied.status_code == 403
    assert denied.json()["error"] == "insufficient_scope"
    assert "X-RateLimit-Remaining" in denied.headers
    ok = call(emu, "/stacks/stack-1/backups.json", "POST", json={"db_type": "mysql"})
    assert ok.status_code == 200
    emu.add_token("writer-only", ("admin",))
    no_read = call(emu, "/stacks/stack-1/backups.json", token="writer-only")
    assert (no_read.status_code, no_read.json()["error"]) == (403, "insufficient_scope")


def test_not_found_names_the_missing_thing(emu: Cloud66Emulator) -> None:
    backup_id = emu.add_backup("stack-1")
    for path, name in [
        ("/stacks/nope.json", "nope"),
        ("/stacks/nope/backups.json", "nope"),
        ("/stacks/stack-1/backups/999999.json", "999999"),
        ("/stacks/stack-1/backups/abc.json", "abc"),
        (f"/stacks/stack-1/backups/{backup_id}/files/tar-zz.json", "tar-zz"),
        ("/stacks/stack-1/servers.json", "servers"),
        ("/nothing/here", "nothing"),
    ]:
        resp = call(emu, path)
        assert resp.status_code == 404, path
        body = resp.json()
        assert body["error"] == "not_found" and name in body["error_description"], body
        assert set(body) == {"error", "error_description", "details"}
    outside = requests.get(emu.base_url.replace("/api/3", "/elsewhere"), timeout=5)
    assert outside.status_code == 404
    with pytest.raises(KeyError):
        emu.file_ids("stack-1", 999999)
    with pytest.raises(KeyError):
        emu.add_backup("no-such-stack")
    with pytest.raises(KeyError):
        emu.file_size("stack-1", backup_id, "tar-aa")


# -- rate limits ----------------------------------------------------------------------------------


def test_rate_headers_throttle_and_recovery() -> None:
    with Cloud66Emulator(TOKEN, hourly_budget=3, budget_window=0.6) as emu:
        emu.add_stack("s")
        backup_id = emu.add_backup("s")
        url = file_url(emu, "s", backup_id, "tar")  # request 1 of 3
        remaining = [call(emu, "/stacks/s.json").headers["X-RateLimit-Remaining"] for _ in range(2)]
        assert remaining == ["1", "0"]
        throttled = call(emu, "/stacks/s.json")
        assert throttled.status_code == 503
        assert throttled.json()["error"] == "throttled"
        assert throttled.headers["X-RateLimit-Remaining"] == "0"
        assert throttled.headers["X-RateLimit-Limit"] == "3"
        reset = int(throttled.headers["X-RateLimit-Reset"])
        assert time.time() - 1 <= reset <= time.time() + 2
        # Throttled requests are not counted, and file downloads are not API requests.
        assert requests.get(url, timeout=5).status_code == 200
        time.sleep(0.7)
        recovered = call(emu, "/stacks/s.json")
        assert recovered.status_code == 200
        assert recovered.headers["X-RateLimit-Remaining"] == "2"
        emu.set_remaining(0)
        assert call(emu, "/stacks/s.json").status_code == 503
        emu.set_remaining(5)
        assert call(emu, "/stacks/s.json").headers["X-RateLimit-Remaining"] == "4"


def test_budget_is_per_token(emu: Cloud66Emulator) -> None:
    emu.add_token("second", ("public",))
    emu.set_remaining(0)
    assert call(emu, "/stacks.json").status_code == 503
    resp = call(emu, "/stacks.json", token="second")
    assert resp.status_code == 200 and resp.headers["X-RateLimit-Remaining"] == "2999"


# -- POST: backup tasks and imports ---------------------------------------------------------------


def wait_for_new(
    emu: Cloud66Emulator, before: set[int], count: int, timeout: float = 5
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        records = call(emu, "/stacks/stack-1/backups.json").json()["response"]
        new = [r for r in records if r["id"] not in before]
        if len(new) >= count:
            return new
        time.sleep(0.05)
    raise AssertionError(f"expected {count} new backups")


def test_post_backup_task_creates_backups_after_delay(emu: Cloud66Emulator) -> None:
    old = emu.add_backup("stack-1", group=4)
    before = {old}
    body = {"db_type": "mysql,redis", "frequency": "0 */1 * * *", "keep_count": 10, "gzip": True}
    started = time.monotonic()
    resp = call(emu, "/stacks/stack-1/backups.json", "POST", json=body)
    assert resp.status_code == 200
    assert resp.json() == {"response": {"ok": True, "message": "queued for creation"}}
    assert {r["id"] for r in call(emu, "/stacks/stack-1/backups.json").json()["response"]} == before
    new = wait_for_new(emu, before, 2)
    assert time.monotonic() - started >= 0.15
    assert sorted(r["db_type"] for r in new) == ["mysql", "redis"]
    assert all(r["backup_status"] == 0 and r["backup_result"] == "" for r in new)
    assert all(r["id"] > old for r in new)
    old_date = emu.backups("stack-1")[-1]["backup_date_iso"]
    assert all(r["backup_date_iso"] > old_date for r in new), "new backups must sort after older ones"
    mysql = next(r for r in new if r["db_type"] == "mysql")
    assert emu.group_of("stack-1", mysql["id"]) == 4, "a task for an existing database keeps its group"
    assert emu.file_ids("stack-1", mysql["id"]) == ["tar"]
    # Form-encoded bodies (the docs' curl examples) work too; "all" means every database of the stack.
    form = call(emu, "/stacks/stack-1/backups", "POST", data={"db_type": "all"})
    assert form.status_code == 200
    assert len(wait_for_new(emu, before | {r["id"] for r in new}, 3)) == 3


def test_post_backup_task_failed_outcome() -> None:
    with Cloud66Emulator(TOKEN, backup_delay=0.05, backup_outcome="failed") as emu:
        emu.add_stack("stack-1")
        assert call(emu, "/stacks/stack-1/backups.json", "POST", json={}).status_code == 200
        (record,) = wait_for_new(emu, set(), 1)
        assert record["backup_status"] == 1
        assert "failed" in record["backup_result"].lower()
        assert call(emu, f"/stacks/stack-1/backups/{record['id']}/files.json").json()["response"] == []
        emu.backup_outcome = "ok"
        call(emu, "/stacks/stack-1/backups.json", "POST", json={"db_type": "mysql"})
        (second,) = wait_for_new(emu, {record["id"]}, 1)
        assert second["backup_status"] == 0


@pytest.mark.parametrize(
    "body",
    [
        {"db_type": "oracle"},
        {"db_type": "mysql,nosql"},
        {"keep_count": "many"},
        {"frequency": "hourly"},
        {"gzip": "perhaps"},
        {"remote_url": "https://example.com/x.tar", "db_type": "mysql"},  # no group
        {"remote_url": "https://example.com/x.tar", "group": 5},  # no db_type
        {"remote_url": "https://example.com/x.tar", "group": 5, "db_type": "all"},
    ],
)
def test_post_rejects_bad_parameters(emu: Cloud66Emulator, body: dict[str, Any]) -> None:
    resp = call(emu, "/stacks/stack-1/backups.json", "POST", json=body)
    assert resp.status_code == 400
    assert resp.json()["error"] == "bad_request" and resp.json()["details"]


def test_post_rejects_invalid_json(emu: Cloud66Emulator) -> None:
    resp = call(
        emu,
        "/stacks/stack-1/backups.json",
        "POST",
        data=b"{nope",
        headers={"Content-Type": "application/json"},
    )
    assert resp.status_code == 400


def test_import_backup(emu: Cloud66Emulator) -> None:
    body = {"remote_url": "https://s3.amazonaws.com/b/redis_23.tar", "group": 9, "db_type": "redis"}
    resp = call(emu, "/stacks/stack-1/backups.json", "POST", json=body)
    assert resp.json() == {"response": {"ok": True, "message": "Your external backup queued for upload"}}
    (record,) = wait_for_new(emu, set(), 1)
    assert (record["db_type"], record["database_name"]) == ("redis", "cache")
    assert emu.group_of("stack-1", record["id"]) == 9
    assert call(emu, "/stacks/stack-1/backups.json", params={"group": 9}).json()["count"] == 1


# -- files and signed URLs --------------------------------------------------------------------------


def test_split_backup_parts_scrambled_sizes_and_archive() -> None:
    with Cloud66Emulator(TOKEN, split_threshold=100 * KIB, split_size=40 * KIB) as emu:
        emu.add_stack("s")
        size = 5 * 40 * KIB + 123
        backup_id = emu.add_backup("s", size=size)
        listed = call(emu, f"/stacks/s/backups/{backup_id}/files.json").json()
        ids = [f["id"] for f in listed["response"]]
        expected = ["tar-aa", "tar-ab", "tar-ac", "tar-ad", "tar-ae", "tar-af"]
        assert sorted(ids) == expected and ids != expected, "parts must come scrambled"
        assert emu.file_ids("s", backup_id) == expected
        assert {f["name"] for f in listed["response"]} == {f"app_db.{i}" for i in expected}
        assert listed["count"] == 6 and listed["pagination"]["next"] is None
        archive = b""
        for file_id in expected:
            resp = requests.get(file_url(emu, "s", backup_id, file_id), timeout=5)
            assert resp.status_code == 200
            assert len(resp.content) == emu.file_size("s", backup_id, file_id)
            assert resp.content == emu.file_bytes("s", backup_id, file_id)
            archive += resp.content
        assert [emu.file_size("s", backup_id, i) for i in expected] == [40 * KIB] * 5 + [123]
        digest = hashlib.sha256(archive).hexdigest()
        assert digest == emu.archive_sha256("s", backup_id)
        assert digest == hashlib.sha256(b"".join(emu.iter_archive("s", backup_id, chunk=7 * KIB))).hexdigest()
        assert [len(c) for c in emu.iter_archive("s", backup_id, chunk=64 * KIB)] == [64 * KIB] * 3 + [
            size - 192 * KIB
        ]
        assert archive == c66content.content_range(backup_id, 0, size), "default seed is the backup id"
        # At the threshold exactly there is no split; different backups have different bytes.
        other = emu.add_backup("s", size=100 * KIB)
        assert emu.file_ids("s", other) == ["tar"]
        assert emu.file_bytes("s", other, "tar")[:1000] != archive[:1000]


def test_files_list_paginates_and_empty_backup() -> None:
    with Cloud66Emulator(TOKEN, split_threshold=0, split_size=KIB) as emu:
        emu.add_stack("s")
        backup_id = emu.add_backup("s", size=45 * KIB)
        first = call(emu, f"/stacks/s/backups/{backup_id}/files.json").json()
        second = call(emu, f"/stacks/s/backups/{backup_id}/files.json", params={"page": 2}).json()
        assert (len(first["response"]), first["pagination"]["next"]) == (30, 2)
        assert (len(second["response"]), second["pagination"]["next"]) == (15, None)
        ids = sorted(f["id"] for f in first["response"] + second["response"])
        assert ids == emu.file_ids("s", backup_id) and len(set(ids)) == 45
        empty = emu.add_backup("s", size=0)
        assert call(emu, f"/stacks/s/backups/{empty}/files.json").json()["response"] == [
            {"id": "tar", "name": "app_db.tar"}
        ]
        resp = requests.get(file_url(emu, "s", empty, "tar"), timeout=5)
        assert (resp.status_code, resp.content, resp.headers["Content-Length"]) == (200, b"", "0")
        assert emu.archive_sha256("s", empty) == hashlib.sha256(b"").hexdigest()


def test_signed_url_double_encoding_quirk(emu: Cloud66Emulator) -> None:
    backup_id = emu.add_backup("stack-1", size=5000)
    resp = call(emu, f"/stacks/stack-1/backups/{backup_id}/files/tar.json")
    assert "\\u0026" in resp.text, "the API escapes & as \\u0026 in JSON like Rails"
    body = resp.json()
    assert body["response"]["ok"] is True
    quirky = body["response"]["public_url"]
    assert quirky.startswith(emu.origin + "/c66-backups/") and quirky.count("%25") >= 1
    fixed = quirky.replace("%25", "%")
    query = parse_qs(urlsplit(fixed).query)
    assert query["AWSAccessKeyId"] == ["AKIAEMULATOR"] and int(query["Expires"][0]) > time.time()
    assert "%3D" in fixed and "%25" not in fixed
    raw = requests.get(quirky, timeout=5)
    assert raw.status_code == 403 and b"<Code>SignatureDoesNotMatch</Code>" in raw.content
    assert raw.headers["Content-Type"] == "application/xml"
    good = requests.get(fixed, timeout=5)
    assert good.status_code == 200 and good.content == emu.file_bytes("stack-1", backup_id, "tar")
    assert good.headers["Content-Type"] == "application/x-tar"
    first = fixed.split("Signature=", 1)[1][0]
    tampered = fixed.replace("Signature=" + first, "Signature=" + ("B" if first == "A" else "A"))
    assert requests.get(tampered, timeout=5).status_code == 403
    other_path = fixed.replace("app_db.tar", "app_db.tar-aa")
    assert b"SignatureDoesNotMatch" in requests.get(other_path, timeout=5).content
    unsigned = fixed.split("?", 1)[0]
    assert b"<Code>AccessDenied</Code>" in requests.get(unsigned, timeout=5).content
    assert emu.signed_url("stack-1", backup_id, "tar", api_quirk=True).count("%25") >= 1
    assert requests.get(emu.signed_url("stack-1", backup_id, "tar"), timeout=5).status_code == 200


def test_expire_urls_and_ttl(emu: Cloud66Emulator) -> None:
    backup_id = emu.add_backup("stack-1")
    old = file_url(emu, "stack-1", backup_id, "tar")
    assert requests.get(old, timeout=5).status_code == 200
    emu.expire_urls()
    expired = requests.get(old, timeout=5)
    assert expired.status_code == 403
    assert b"<Code>AccessDenied</Code>" in expired.content and b"Request has expired" in expired.content
    fresh = file_url(emu, "stack-1", backup_id, "tar")
    assert requests.get(fresh, timeout=5).status_code == 200
    emu.url_ttl = 0.3
    short = file_url(emu, "stack-1", backup_id, "tar")
    expires = int(parse_qs(urlsplit(short).query)["Expires"][0])
    time.sleep(max(0.0, expires - time.time()) + 0.05)
    assert b"Request has expired" in requests.get(short, timeout=5).content


def test_download_with_authorization_header_is_rejected(emu: Cloud66Emulator) -> None:
    url = file_url(emu, "stack-1", emu.add_backup("stack-1"), "tar")
    resp = requests.get(url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
    assert resp.status_code == 400
    assert (
        b"<Code>InvalidArgument</Code>" in resp.content and b"Only one auth mechanism allowed" in resp.content
    )


def test_head_on_signed_url_is_403_without_body(emu: Cloud66Emulator) -> None:
    url = file_url(emu, "stack-1", emu.add_backup("stack-1"), "tar")
    resp = requests.head(url, timeout=5)
    assert resp.status_code == 403 and resp.content == b""
    assert requests.get(url, timeout=5).status_code == 200


def test_range_requests(emu: Cloud66Emulator) -> None:
    size = 3 * (1 << 20) + 17  # spans content chunks
    backup_id = emu.add_backup("stack-1", size=size, seed=42)
    url = file_url(emu, "stack-1", backup_id, "tar")
    whole = requests.get(url, timeout=10)
    assert whole.status_code == 200 and "Content-Range" not in whole.headers
    assert whole.headers["Content-Length"] == str(size) and whole.headers["Accept-Ranges"] == "bytes"
    assert whole.content == c66content.content_range(42, 0, size)
    for header, start, end in [
        ("bytes=10-19", 10, 19),
        ("bytes=0-0", 0, 0),
        ((f"bytes={(1 << 20) - 5}-{(1 << 20) + 4}"), (1 << 20) - 5, (1 << 20) + 4),
        (f"bytes={size - 5}-", size - 5, size - 1),
        ("bytes=-7", size - 7, size - 1),
        (f"bytes=100-{size + 1000}", 100, size - 1),
    ]:
        resp = requests.get(url, headers={"Range": header}, timeout=10)
        assert resp.status_code == 206, header
        assert resp.headers["Content-Range"] == f"bytes {start}-{end}/{size}", header
        assert resp.headers["Content-Length"] == str(end - start + 1)
        assert resp.content == whole.content[start : end + 1], header
    for header in (f"bytes={size}-", f"bytes={size + 5}-{size + 9}"):
        resp = requests.get(url, headers={"Range": header}, timeout=5)
        assert resp.status_code == 416 and resp.headers["Content-Range"] == f"bytes */{size}"
        assert b"<Code>InvalidRange</Code>" in resp.content
    # Unparseable or multiple ranges are ignored, as S3 does.
    assert requests.get(url, headers={"Range": "bytes=0-1,5-6"}, timeout=5).status_code == 200


def test_keep_alive_serves_sequential_requests_on_one_connection(emu: Cloud66Emulator) -> None:
    backup_id = emu.add_backup("stack-1", size=10_000)
    url = urlsplit(file_url(emu, "stack-1", backup_id, "tar"))
    conn = http.client.HTTPConnection("127.0.0.1", emu.port, timeout=5)
    try:
        for path in [f"{url.path}?{url.query}", "/api/3/ping/auth.json", f"{url.path}?{url.query}"]:
            headers = (
                {"Authorization": f"Bearer {TOKEN}"} if path.startswith("/api") else {"Range": "bytes=0-99"}
            )
            conn.request("GET", path, headers=headers)
            resp = conn.getresponse()
            body = resp.read()
            assert resp.status in (200, 206) and len(body) == int(resp.getheader("Content-Length") or -1)
            assert resp.getheader("Connection") != "close"
        assert conn.sock is not None, "the connection stayed open"
    finally:
        conn.close()


def test_parallel_downloads(emu: Cloud66Emulator) -> None:
    backup_id = emu.add_backup("stack-1", size=2 << 20)
    url = file_url(emu, "stack-1", backup_id, "tar")
    expected = emu.file_bytes("stack-1", backup_id, "tar")
    results: dict[int, bytes] = {}

    def fetch(i: int) -> None:
        start = i * (512 << 10)
        headers = {"Range": f"bytes={start}-{start + (512 << 10) - 1}"}
        results[i] = requests.get(url, headers=headers, timeout=10).content

    threads = [threading.Thread(target=fetch, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert b"".join(results[i] for i in range(4)) == expected


def test_stop_is_prompt_and_cuts_keep_alive_connections() -> None:
    emu = Cloud66Emulator(TOKEN).start()
    port = emu.port
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", "/api/3/ping/auth.json", headers={"Authorization": f"Bearer {TOKEN}"})
    assert conn.getresponse().read()
    started = time.monotonic()
    emu.stop()
    assert time.monotonic() - started < 2
    with pytest.raises((http.client.HTTPException, OSError)):
        conn.request("GET", "/api/3/ping/auth.json", headers={"Authorization": f"Bearer {TOKEN}"})
        conn.getresponse()
    conn.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    emu.stop()  # idempotent


# -- fault injection --------------------------------------------------------------------------------


def test_fail_next_json_html_and_method_filter(emu: Cloud66Emulator) -> None:
    emu.fail_next(2, r"/backups")
    for _ in range(2):
        resp = call(emu, "/stacks/stack-1/backups.json")
        assert resp.status_code == 503
        assert resp.json()["error"] == "internal_error" and "error_description" in resp.json()
    assert call(emu, "/stacks/stack-1/backups.json").status_code == 200
    emu.fail_next(
        1,
        r"^/api/3/stacks/stack-1(\.json)?$",
        502,
        body=b"<html>Bad Gateway</html>",
        headers={"X-Proxy": "1"},
    )
    assert call(emu, "/stacks/stack-1/backups.json").status_code == 200, "pattern must not match"
    html = call(emu, "/stacks/stack-1.json")
    assert (html.status_code, html.content, html.headers["X-Proxy"]) == (
        502,
        b"<html>Bad Gateway</html>",
        "1",
    )
    assert html.headers["Content-Type"].startswith("text/html")
    emu.fail_next(1, "/backups", 409, error="conflict", method="POST")
    assert call(emu, "/stacks/stack-1/backups.json").status_code == 200
    conflict = call(emu, "/stacks/stack-1/backups.json", "POST", json={})
    assert (conflict.status_code, conflict.json()["error"]) == (409, "conflict")
    assert call(emu, "/stacks/stack-1/backups.json", "POST", json={}).status_code == 200


def test_fail_next_on_file_downloads(emu: Cloud66Emulator) -> None:
    url = file_url(emu, "stack-1", emu.add_backup("stack-1"), "tar")
    emu.fail_next(1, r"^/c66-backups/", 500)
    assert requests.get(url, timeout=5).status_code == 500
    assert requests.get(url, timeout=5).status_code == 200


def test_rate_limit_next_sends_429_with_retry_after(emu: Cloud66Emulator) -> None:
    emu.rate_limit_next(1, "/stacks", retry_after=2)
    emu.rate_limit_next(1, "/stacks", retry_after=0.25)
    first, second = call(emu, "/stacks.json"), call(emu, "/stacks.json")
    assert (first.status_code, first.headers["Retry-After"]) == (429, "2")
    assert (second.status_code, second.headers["Retry-After"]) == (429, "0.25")
    assert call(emu, "/stacks.json").status_code == 200


def test_drop_connection_next_resets_mid_body(emu: Cloud66Emulator) -> None:
    size = 256 * KIB
    backup_id = emu.add_backup("stack-1", size=size)
    url = file_url(emu, "stack-1", backup_id, "tar")
    emu.drop_connection_next(1, r"\.tar$", after_bytes=1000)
    status, headers, body, reset = raw_get(url)
    assert status == 200 and headers["Content-Length"] == str(size)
    assert len(body) <= 1000 and reset, "an abrupt drop resets the connection (no FIN)"
    emu.drop_connection_next(1, r"\.tar$", after_bytes=1000)
    with pytest.raises((requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError)):
        requests.get(url, timeout=5).raise_for_status()
    assert requests.get(url, timeout=5).content == emu.file_bytes("stack-1", backup_id, "tar")
    emu.drop_connection_next(1, "/backups", after_bytes=10)
    with pytest.raises((requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError)):
        call(emu, "/stacks/stack-1/backups.json")
    assert call(emu, "/stacks/stack-1/backups.json").status_code == 200


def test_truncate_next_closes_cleanly_after_short_body(emu: Cloud66Emulator) -> None:
    size = 100 * KIB
    backup_id = emu.add_backup("stack-1", size=size)
    url = file_url(emu, "stack-1", backup_id, "tar")
    emu.truncate_next(1, "app_db", after_bytes=5000)
    status, headers, body, reset = raw_get(url, {"Range": "bytes=100-"})
    assert (status, headers["Content-Length"], reset) == (206, str(size - 100), False)
    assert body == emu.file_bytes("stack-1", backup_id, "tar")[100:5100]
    emu.truncate_next(1, "app_db", after_bytes=5000)
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(url, timeout=5)
    assert len(requests.get(url, timeout=5).content) == size


def test_overlong_next_sends_more_than_announced(emu: Cloud66Emulator) -> None:
    size = 10 * KIB
    backup_id = emu.add_backup("stack-1", size=size)
    url = file_url(emu, "stack-1", backup_id, "tar")
    data = emu.file_bytes("stack-1", backup_id, "tar")
    emu.overlong_next(1, "app_db", extra=300)
    status, headers, body, _ = raw_get(url, {"Range": "bytes=0-999"})
    assert (status, headers["Content-Length"], headers["Content-Range"]) == (
        206,
        "1000",
        f"bytes 0-999/{size}",
    )
    assert body == data[:1300]
    emu.overlong_next(1, "app_db", extra=300)
    status, headers, body, _ = raw_get(url)
    assert headers["Content-Length"] == str(size) and body == data + bytes(300)


def test_ignore_range_next_answers_whole_file(emu: Cloud66Emulator) -> None:
    backup_id = emu.add_backup("stack-1", size=5000)
    url = file_url(emu, "stack-1", backup_id, "tar")
    emu.ignore_range_next(1, "app_db")
    resp = requests.get(url, headers={"Range": "bytes=10-19"}, timeout=5)
    assert (resp.status_code, len(resp.content)) == (200, 5000)
    assert "Content-Range" not in resp.headers
    assert requests.get(url, headers={"Range": "bytes=10-19"}, timeout=5).status_code == 206


def test_slow_next_delays_the_answer(emu: Cloud66Emulator) -> None:
    emu.slow_next(1, "/ping", delay=0.5)
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(
            emu.base_url + "/ping/auth.json", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=0.2
        )
    emu.slow_next(1, "/ping", delay=0.3)
    started = time.monotonic()
    assert call(emu, "/ping/auth.json").status_code == 200
    slowed = time.monotonic() - started
    assert slowed >= 0.25
    started = time.monotonic()
    assert call(emu, "/ping/auth.json").status_code == 200
    assert time.monotonic() - started < slowed, "the fault is consumed"


def test_malformed_json_next(emu: Cloud66Emulator) -> None:
    emu.malformed_json_next(1, "/backups")
    resp = call(emu, "/stacks/stack-1/backups.json")
    assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("application/json")
    with pytest.raises(ValueError):
        json.loads(resp.content)
    assert call(emu, "/stacks/stack-1/backups.json").json()["count"] == 0


def test_bandwidth_cap_slows_downloads() -> None:
    size = 192 * KIB
    rate = 512 * KIB  # expected duration 0.375 s
    with Cloud66Emulator(TOKEN, bandwidth_per_connection=rate) as emu:
        emu.add_stack("s")
        url = file_url(emu, "s", emu.add_backup("s", size=size), "tar")
        started = time.monotonic()
        assert len(requests.get(url, timeout=10).content) == size
        capped = time.monotonic() - started
        assert capped >= 0.5 * size / rate
        emu.bandwidth_per_connection = None
        started = time.monotonic()
        assert len(requests.get(url, timeout=10).content) == size
        assert time.monotonic() - started < capped


# -- request log, content, CLI ----------------------------------------------------------------------


def test_request_log(emu: Cloud66Emulator) -> None:
    backup_id = emu.add_backup("stack-1")
    emu.clear_requests()
    url = file_url(emu, "stack-1", backup_id, "tar")
    requests.get(url, timeout=5)
    call(emu, "/stacks/stack-1/backups.json", "POST", json={"db_type": "mysql"}, headers={"X-Account": "7"})
    call(emu, "/stacks/stack-1.json", token="bad")
    log = emu.requests
    assert [(r.method, r.path, r.status, r.kind) for r in log] == [
        ("GET", f"/api/3/stacks/stack-1/backups/{backup_id}/files/tar.json", 200, "api"),
        ("GET", urlsplit(url).path, 200, "file"),
        ("POST", "/api/3/stacks/stack-1/backups.json", 200, "api"),
        ("GET", "/api/3/stacks/stack-1.json", 401, "api"),
    ]
    assert log[0].headers["Authorization"] == f"Bearer {TOKEN}"
    assert "Authorization" not in log[1].headers
    assert set(log[1].query) == {"AWSAccessKeyId", "Expires", "Signature"}
    assert log[2].json == {"db_type": "mysql"} and log[2].headers["X-Account"] == "7"
    assert log[0].json is None
    text = repr(log) + repr(log[1])
    assert TOKEN not in text and log[1].query["Signature"] not in text
    assert isinstance(log[0], RecordedRequest)
    with pytest.raises(AttributeError):
        log[0].status = 1  # type: ignore[misc]
    emu.clear_requests()
    assert emu.requests == []


def test_content_is_deterministic_seekable_and_varied() -> None:
    mib = c66content.BLOCK_SIZE
    whole = c66content.content_range(7, 0, 3 * mib)
    assert whole == c66content.content_range(7, 0, 3 * mib)
    assert c66content.content_range(7, mib - 10, 20) == whole[mib - 10 : mib + 10]
    assert whole[:mib] != whole[mib : 2 * mib] != whole[2 * mib :]
    assert c66content.content_range(8, 0, 1000) != whole[:1000]
    assert c66content.sha256_range(7, 5, 2 * mib) == hashlib.sha256(whole[5 : 5 + 2 * mib]).hexdigest()
    assert c66content.sha256_hex(7, 3 * mib) == hashlib.sha256(whole).hexdigest()
    assert [len(v) for v in c66content.iter_content(7, 100, 2 * mib, chunk=mib)] == [mib - 100, mib, 100]


def test_cli_smoke_passes(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["smoke"]) == 0
    out = capsys.readouterr().out
    assert "SMOKE OK" in out and "FAIL" not in out


def test_cli_serve_prints_base_url_and_stops_on_signal() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "airflow_provider_c66.testing",
            "serve",
            "--token",
            "cli-token",
            "--backup-size",
            "99",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        base = proc.stdout.readline().strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/api/3", base), base
        resp = requests.get(
            base + "/stacks/stack-1/backups.json", headers={"Authorization": "Bearer cli-token"}, timeout=5
        )
        assert [r["backup_size"] for r in resp.json()["response"]] == [99]
        proc.terminate()
        assert proc.wait(timeout=5) == 0
    finally:
        proc.kill()
        proc.wait()
