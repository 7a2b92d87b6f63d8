"""The sans-IO policy: error mapping, retry decisions and rate-budget arithmetic, without a network."""

from __future__ import annotations

import json

import pytest

from airflow_provider_c66 import api
from airflow_provider_c66.api import ApiRequest, Attempts, RateBudget, RetryPolicy
from airflow_provider_c66.exceptions import (
    Cloud66ApiError,
    Cloud66AuthError,
    Cloud66NotFoundError,
    Cloud66OutcomeUnknownError,
    Cloud66RateLimitError,
    Cloud66ResponseError,
)

GET = ApiRequest("GET", "/stacks/abc/backups.json", subject="stack 'abc'")
POST = ApiRequest("POST", "/stacks/abc/backups.json", body={"db_type": "all"}, subject="stack 'abc'")


def envelope(error: str, description: str = "", details: str = "") -> bytes:
    return json.dumps({"error": error, "error_description": description, "details": details}).encode()


@pytest.mark.parametrize(
    ("request_", "status", "body", "kind", "retryable", "text"),
    [
        (
            GET,
            401,
            envelope("unauthorized", "bad token"),
            Cloud66AuthError,
            False,
            "rejected the access token",
        ),
        (GET, 403, envelope("insufficient_scope"), Cloud66AuthError, False, "'public' scope"),
        (POST, 403, envelope("insufficient_scope"), Cloud66AuthError, False, "'admin' scope"),
        (GET, 404, envelope("not_found", "nope"), Cloud66NotFoundError, False, "stack 'abc' was not found"),
        (
            GET,
            400,
            envelope("bad_request", "x", "db_type is wrong"),
            Cloud66ApiError,
            False,
            "db_type is wrong",
        ),
        (GET, 402, envelope("trial_expired"), Cloud66ApiError, False, "needs payment"),
        (GET, 500, b"<html>oops</html>", Cloud66ApiError, True, "non-JSON answer"),
        (GET, 502, envelope("bad_gateway"), Cloud66ApiError, True, "502"),
        (GET, 503, envelope("not_implemented"), Cloud66ApiError, False, "not_implemented"),
        (GET, 503, envelope("throttled"), Cloud66RateLimitError, True, "hourly request budget is spent"),
        (GET, 429, b"", Cloud66ApiError, True, "429"),
        (GET, 200, b"not json", Cloud66ResponseError, True, "not a Cloud 66 JSON envelope"),
        (GET, 200, b'{"x": 1}', Cloud66ResponseError, True, "not a Cloud 66 JSON envelope"),
    ],
)
def test_error_mapping(request_, status, body, kind, retryable, text):
    outcome = api.interpret(request_, status, {"Content-Type": "application/json"}, body)
    assert type(outcome.error) is kind
    assert outcome.retryable is retryable
    assert text in str(outcome.error)
    assert outcome.error.status == status
    assert outcome.error.method == request_.method and outcome.error.path == request_.path


NOT_REPEATED = (
    ". It was not sent again: Cloud 66 may have carried it out. Check the stack's backups (and its "
    "backup tasks) in Cloud 66 before running this task again"
)


@pytest.mark.parametrize(
    ("status", "body", "said"),
    [
        (200, b"<html>Be right back</html>", "the answer is not a Cloud 66 JSON envelope (non-JSON answer "),
        (200, b'{"response": [{"id"', "the answer is not a Cloud 66 JSON envelope (non-JSON answer "),
        (500, envelope("internal_error", "boom"), "Cloud 66 answered 500 internal_error: boom"),
        (502, b"<html>Bad gateway</html>", "Cloud 66 answered 502 non-JSON answer "),
        (503, envelope("unavailable"), "Cloud 66 answered 503 unavailable"),
        (504, b"", "Cloud 66 answered 504 non-JSON answer "),
        (408, b"", "Cloud 66 answered 408 non-JSON answer "),
    ],
)
def test_a_post_answered_so_may_have_been_carried_out_and_is_final(status, body, said):
    outcome = api.interpret(POST, status, {"Content-Type": "text/html"}, body)
    assert type(outcome.error) is Cloud66OutcomeUnknownError
    assert isinstance(outcome.error, Cloud66ResponseError)
    assert outcome.retryable is False
    message = str(outcome.error)
    assert message.startswith(f"POST /stacks/abc/backups.json: {said}") and message.endswith(NOT_REPEATED)
    assert (outcome.error.status, outcome.error.method, outcome.error.path) == (status, "POST", POST.path)
    with pytest.raises(Cloud66OutcomeUnknownError):
        Attempts(RetryPolicy(), RateBudget()).delay_after(POST, outcome)


def test_a_post_without_an_answer_after_sending_is_final_and_before_sending_is_retried():
    exc = ConnectionResetError(104, "Connection reset by peer")
    sent = api.transport_failure(POST, exc, maybe_sent=True)
    assert type(sent.error) is Cloud66OutcomeUnknownError and sent.retryable is False
    assert str(sent.error) == (
        "POST /stacks/abc/backups.json: no answer from Cloud 66 (ConnectionResetError: [Errno 104] "
        "Connection reset by peer)" + NOT_REPEATED
    )
    assert sent.error.status is None
    refused = api.transport_failure(POST, ConnectionRefusedError(111, "refused"), maybe_sent=False)
    assert type(refused.error) is Cloud66ApiError and refused.retryable is True
    assert str(refused.error) == (
        "POST /stacks/abc/backups.json: no answer from Cloud 66 (ConnectionRefusedError: [Errno 111] refused)"
    )
    lost_get = api.transport_failure(GET, exc, maybe_sent=True)
    assert type(lost_get.error) is Cloud66ApiError and lost_get.retryable is True


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (429, b"", Cloud66ApiError),
        (503, envelope("throttled"), Cloud66RateLimitError),
    ],
)
def test_a_post_refused_for_now_is_still_retried(status, body, kind):
    outcome = api.interpret(POST, status, {}, body)
    assert type(outcome.error) is kind and outcome.retryable is True
    assert "not sent again" not in str(outcome.error)


def test_a_post_refused_for_good_is_not_said_to_be_carried_out():
    for status, body in [(503, envelope("not_implemented")), (400, envelope("bad_request", "x", "bad"))]:
        outcome = api.interpret(POST, status, {}, body)
        assert type(outcome.error) is Cloud66ApiError and outcome.retryable is False
        assert "not sent again" not in str(outcome.error)


def test_details_are_preferred_over_description():
    outcome = api.interpret(GET, 400, {}, envelope("bad", "generic", "specific"))
    assert outcome.error.description == "specific"
    assert outcome.error.error_id == "bad"


def test_success_envelope_and_pagination():
    body = json.dumps({"response": [1], "pagination": {"next": 2}}).encode()
    outcome = api.interpret(GET, 200, {"X-RateLimit-Remaining": "17"}, body)
    assert outcome.page == api.Page([1], True, 17)
    last = api.interpret(GET, 200, {}, json.dumps({"response": [], "pagination": {"next": None}}).encode())
    assert last.page.has_next is False


def test_retry_after_is_a_floor_for_the_backoff():
    attempts = Attempts(RetryPolicy(backoff_base=0.01), RateBudget())
    outcome = api.interpret(GET, 429, {"Retry-After": "3"}, b"")
    assert attempts.delay_after(GET, outcome) == 3.0


def test_attempts_are_bounded():
    attempts = Attempts(RetryPolicy(max_attempts=3, backoff_base=0.01), RateBudget())
    outcome = api.interpret(GET, 500, {}, b"")
    attempts.delay_after(GET, outcome)
    attempts.delay_after(GET, outcome)
    with pytest.raises(Cloud66ApiError, match="500"):
        attempts.delay_after(GET, outcome)
    assert attempts.count == 3


def test_a_retry_state_counts_attempts_and_time_from_the_first_failure(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(api.time, "monotonic", lambda: clock[0])
    retry = api.RetryState(RetryPolicy(max_attempts=4, backoff_base=1, backoff_max=2, total_timeout=10))
    clock[0] += 3600  # a long download that has not failed yet spends none of the budget
    assert retry.spent == 0.0
    assert not retry.gives_up() and retry.failures == 1 and retry.spent == 0.0
    clock[0] += 10
    assert not retry.gives_up() and retry.spent == 10.0  # at the budget: one more try
    clock[0] += 0.5
    assert retry.gives_up() and retry.failures == 3  # past it
    attempts = api.RetryState(RetryPolicy(max_attempts=2))
    assert not attempts.gives_up() and attempts.gives_up()  # two attempts: one failure may be retried


def test_a_retry_state_waits_at_least_retry_after_up_to_the_backoff_cap(monkeypatch):
    monkeypatch.setattr(api.random, "uniform", lambda low, high: high)
    retry = api.RetryState(RetryPolicy(backoff_base=1, backoff_max=8))
    retry.gives_up()
    assert retry.delay() == 1.0
    assert retry.delay(retry_after=5) == 5.0
    assert retry.delay(retry_after=60) == 8.0  # a signed-URL host's long Retry-After is capped
    retry.gives_up()
    assert retry.delay(retry_after=0.5) == 2.0


def test_non_retryable_errors_raise_at_once():
    attempts = Attempts(RetryPolicy(), RateBudget())
    with pytest.raises(Cloud66AuthError):
        attempts.delay_after(GET, api.interpret(GET, 401, {}, b""))
    assert attempts.count == 1


def test_throttled_with_a_far_reset_raises_rate_limit_error_with_the_reset_time():
    budget = RateBudget()
    now = 1_700_000_000.0
    headers = {"X-RateLimit-Reset": str(now + 1800)}
    outcome = api.interpret(GET, 503, headers, envelope("throttled"))
    budget.observe(outcome, headers)
    with pytest.raises(Cloud66RateLimitError, match="resets at") as info:
        budget.wait_before(GET, RetryPolicy(max_rate_limit_wait=60), now=now)
    assert info.value.reset_at is not None
    assert info.value.reset_at.timestamp() == pytest.approx(now + 1800)


def test_budget_reset_defaults_to_the_top_of_the_next_hour():
    assert api.budget_reset_at({}, now=7200 + 125.0) == 10800
    assert api.budget_reset_at({"Retry-After": "30"}, now=1000.0) == 1030.0
    assert api.budget_reset_at({"X-RateLimit-Reset": "45"}, now=1000.0) == 1045.0


def test_remaining_zero_makes_the_next_call_wait_for_the_reset():
    budget = RateBudget()
    body = json.dumps({"response": []}).encode()
    headers = {"X-RateLimit-Remaining": "0", "Retry-After": "5"}
    budget.observe(api.interpret(GET, 200, headers, body), headers)
    assert 0 < budget.wait_before(GET, RetryPolicy(max_rate_limit_wait=60)) <= 5


def test_redaction_of_signed_urls():
    url = "https://b.s3.amazonaws.com/p/x.tar?AWSAccessKeyId=AKIA&Expires=1&Signature=abc%2Fdef%3D"
    assert api.redact_url(url) == "https://b.s3.amazonaws.com/p/x.tar?[redacted]"
    text = f"HTTPSConnectionPool: Max retries exceeded with url: {url} (Caused by ...)"
    redacted = api.redact_text(text)
    assert "abc%2Fdef" not in redacted and "AKIA" not in redacted
    assert "Signature=[redacted]" in redacted


def test_percent_quirk_is_undone():
    assert api.undo_percent_quirk("x?Signature=C2au%252F1m%253D") == "x?Signature=C2au%2F1m%3D"


# --- the I/O-free steps both drivers run ---------------------------------------------------------
def drive(steps, answers):
    """Run ``api.call``'s steps against scripted answers; return (the trace, the page)."""
    trace, answer = [], None
    answers = iter(answers)
    while True:
        try:
            step = steps.send(answer)
        except StopIteration as done:
            return trace, done.value
        answer = None
        if isinstance(step, api.Send):
            trace.append(("send", step.request.path))
            answer = next(answers)
        else:
            trace.append(("sleep", step.after is not None, step.attempt))


def ok(response, next_page=None, remaining="100"):
    body = json.dumps({"response": response, "pagination": {"next": next_page}}).encode()
    return api.Answer(200, {"X-RateLimit-Remaining": remaining}, body)


def test_one_call_retries_a_503_then_returns_the_page():
    policy = RetryPolicy(backoff_base=0.001, backoff_max=0.001)
    steps = api.call(GET, policy, RateBudget())
    trace, page = drive(steps, [api.Answer(503, {}, envelope("unavailable")), ok([1])])
    assert page.response == [1]
    assert trace == [
        ("sleep", False, 1),
        ("send", GET.path),
        ("sleep", True, 2),  # the driver logs the error and sleeps the backoff
        ("sleep", False, 2),
        ("send", GET.path),
    ]


def test_one_call_turns_a_transport_failure_of_a_post_into_outcome_unknown():
    steps = api.call(POST, RetryPolicy(), RateBudget())
    with pytest.raises(Cloud66OutcomeUnknownError, match="not sent again"):
        drive(steps, [api.Answer(failure=ConnectionResetError("reset"))])
    steps = api.call(POST, RetryPolicy(backoff_base=0.001), RateBudget())
    trace, page = drive(
        steps, [api.Answer(failure=ConnectionRefusedError(), maybe_sent=False), ok({"ok": True})]
    )
    assert page.response == {"ok": True} and trace.count(("send", POST.path)) == 2


def test_a_paged_read_follows_next_and_stops_at_the_last_page():
    steps = api.read_pages(GET, list)
    assert next(steps).params["page"] == 1
    assert steps.send(api.Page([1, 2], True, None)).params["page"] == 2
    with pytest.raises(StopIteration) as done:
        steps.send(api.Page([3], False, None))
    assert done.value.value == [1, 2, 3]


def test_a_paged_read_gives_up_past_max_pages_and_a_polling_read_stops_when_told():
    steps = api.read_pages(GET, list, max_pages=2)
    next(steps)
    steps.send(api.Page([1], True, None))
    with pytest.raises(Cloud66ApiError, match="more than 2 pages"):
        steps.send(api.Page([2], True, None))
    polling = api.read_pages(GET, list, read_on=lambda got: len(got) < 2, max_pages=5)
    next(polling)
    assert polling.send(api.Page([1], True, None)).params["page"] == 2
    with pytest.raises(StopIteration) as done:
        polling.send(api.Page([2], True, None))
    assert done.value.value == [1, 2], "read_on said enough, though another page follows"
