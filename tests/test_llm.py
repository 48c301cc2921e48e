"""Tests for the OpenAI chat backend, through the real SDK against the fake OpenAI server."""

from __future__ import annotations

import logging
import time
from email.utils import formatdate
from typing import Any, cast

import httpx
import openai
import pytest

from contracts.messages import Usage
from devstack.fake_answers import IMAGE_TOKENS, Delay, Raw, Reply, Status
from devstack.fake_openai import FakeOpenAI
from devstack.processes import free_port
from llm import (
    Completion,
    ModelRejected,
    ModelUnavailable,
    OpenAIChat,
    RateLimited,
    build_openai_client,
)
from llm.openai_chat import KEY_REJECTED_MESSAGE, LOCAL_API_KEY_PLACEHOLDER, retry_after_seconds
from tests.support.fixtures import ClientFactory

API_KEY = "sk-test-SECRET-0123456789abcdef"
MODEL = "gpt-test-mini"
HELLO = [{"role": "user", "content": "Say hello."}]


@pytest.fixture
def api_key() -> str:
    """make_client's key here: shaped like a real secret, so the leak checks mean something."""
    return API_KEY


async def test_reply_and_usage_pass_through(fake: FakeOpenAI, make_client: ClientFactory) -> None:
    fake.script(Reply("Hello there, traveller.", prompt_tokens=12, completion_tokens=4))
    chat = OpenAIChat(make_client(), MODEL)

    result = await chat.complete(HELLO, max_tokens=50, temperature=0.2)

    assert result == Completion(text="Hello there, traveller.", usage=Usage(12, 4), model=MODEL)
    [request] = fake.requests
    assert request["model"] == MODEL
    assert request["messages"] == HELLO
    assert request["max_completion_tokens"] == 50
    assert "max_tokens" not in request.body
    assert request["temperature"] == 0.2
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert chat.name == MODEL


async def test_default_usage_is_counted_from_the_request(
    fake: FakeOpenAI, make_client: ClientFactory
) -> None:
    image = {
        "type": "image_url",
        "image_url": {"url": "data:image/jpeg;base64,/9j/", "detail": "low"},
    }
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "You tell stories."},
        {"role": "user", "content": [{"type": "text", "text": "Two pictures here"}, image, image]},
    ]
    result = await OpenAIChat(make_client(), MODEL).complete(
        messages, max_tokens=100, temperature=0.5
    )

    assert "story about 2 pictures" in result.text
    assert result.usage.input_tokens == 3 + 3 + 2 * IMAGE_TOKENS
    assert result.usage.output_tokens == len(result.text.split())


async def test_max_tokens_field_can_be_the_older_name(
    fake: FakeOpenAI, make_client: ClientFactory
) -> None:
    chat = OpenAIChat(make_client(), MODEL, name="local", max_tokens_field="max_tokens")
    await chat.complete(HELLO, max_tokens=64, temperature=0.0)

    [request] = fake.requests
    assert request["max_tokens"] == 64
    assert "max_completion_tokens" not in request.body
    assert chat.name == "local"


async def test_rate_limit_reports_retry_after(fake: FakeOpenAI, make_client: ClientFactory) -> None:
    fake.script(Status(429, {"retry-after": "7"}))
    chat = OpenAIChat(make_client(max_retries=0), MODEL)

    with pytest.raises(RateLimited) as caught:
        await chat.complete(HELLO, max_tokens=10, temperature=0.0)

    assert caught.value.retry_after == 7.0
    assert "rate limit" in str(caught.value)
    assert isinstance(caught.value.__cause__, openai.RateLimitError)
    assert len(fake.requests) == 1


async def test_rate_limit_prefers_retry_after_ms(
    fake: FakeOpenAI, make_client: ClientFactory
) -> None:
    fake.script(Status(429, {"retry-after-ms": "1500", "retry-after": "2"}))
    with pytest.raises(RateLimited) as caught:
        await OpenAIChat(make_client(), MODEL).complete(HELLO, max_tokens=10, temperature=0.0)
    assert caught.value.retry_after == 1.5


async def test_rate_limit_without_hint(fake: FakeOpenAI, make_client: ClientFactory) -> None:
    fake.script(Status(429))
    with pytest.raises(RateLimited) as caught:
        await OpenAIChat(make_client(), MODEL).complete(HELLO, max_tokens=10, temperature=0.0)
    assert caught.value.retry_after is None


def openai_error(message: str, kind: str, code: str, param: str | None = None) -> dict[str, object]:
    """An error body as the OpenAI API writes it."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


async def test_exhausted_quota_is_not_a_rate_limit(
    fake: FakeOpenAI, make_client: ClientFactory
) -> None:
    body = openai_error(
        "You exceeded your current quota.", "insufficient_quota", "insufficient_quota"
    )
    fake.script(Status(429, body=body))
    with pytest.raises(ModelUnavailable, match="quota"):
        await OpenAIChat(make_client(), MODEL).complete(HELLO, max_tokens=10, temperature=0.0)


async def test_server_error_after_retries(fake: FakeOpenAI, make_client: ClientFactory) -> None:
    fake.script(Status(500), Status(503))
    chat = OpenAIChat(make_client(max_retries=1), MODEL)
    started = time.monotonic()

    with pytest.raises(ModelUnavailable, match="unavailable") as caught:
        await chat.complete(HELLO, max_tokens=10, temperature=0.0)

    # The SDK retried once (backoff 0.5 s at most) and then gave up.
    assert len(fake.requests) == 2
    assert "503" in str(caught.value)
    assert time.monotonic() - started < 3.0


async def test_server_error_then_success_is_retried_by_the_sdk(
    fake: FakeOpenAI, make_client: ClientFactory
) -> None:
    fake.script(Status(502, {"retry-after-ms": "10"}), Reply("Recovered."))
    result = await OpenAIChat(make_client(max_retries=1), MODEL).complete(
        HELLO, max_tokens=10, temperature=0.0
    )
    assert result.text == "Recovered."
    assert len(fake.requests) == 2


async def test_rejected_key_is_unavailable_and_never_leaks(
    fake: FakeOpenAI, make_client: ClientFactory
) -> None:
    fake.script(Status(401))
    with pytest.raises(ModelUnavailable) as caught:
        await OpenAIChat(make_client(), MODEL).complete(HELLO, max_tokens=10, temperature=0.0)

    message = str(caught.value)
    assert message == KEY_REJECTED_MESSAGE
    assert "API key" in message
    assert API_KEY not in message
    # The fake echoed the key back, so the SDK's own error does contain it: we must not pass that on.
    assert API_KEY in str(caught.value.__cause__)


async def test_permission_denied_mentions_the_key(
    fake: FakeOpenAI, make_client: ClientFactory
) -> None:
    fake.script(Status(403))
    with pytest.raises(ModelUnavailable, match="API key") as caught:
        await OpenAIChat(make_client(), MODEL).complete(HELLO, max_tokens=10, temperature=0.0)
    assert MODEL in str(caught.value)


async def test_unknown_model_is_a_configuration_problem(
    fake: FakeOpenAI, make_client: ClientFactory
) -> None:
    fake.script(Status(404))
    with pytest.raises(ModelUnavailable, match=MODEL):
        await OpenAIChat(make_client(), MODEL).complete(HELLO, max_tokens=10, temperature=0.0)


async def test_bad_input_is_rejected_with_provider_detail(
    fake: FakeOpenAI, make_client: ClientFactory
) -> None:
    body = openai_error(
        f"Invalid image data (key {API_KEY} and sk-other-abcdefghij).",
        "invalid_request_error",
        "invalid_image",
        param="messages",
    )
    fake.script(Status(400, body=body))
    with pytest.raises(ModelRejected) as caught:
        await OpenAIChat(make_client(), MODEL).complete(HELLO, max_tokens=10, temperature=0.0)

    message = str(caught.value)
    assert "Invalid image data" in message
    assert API_KEY not in message
    assert "sk-other" not in message


async def test_content_policy_is_rejected(fake: FakeOpenAI, make_client: ClientFactory) -> None:
    body = openai_error(
        "Your request was rejected by our safety system.",
        "invalid_request_error",
        "content_policy_violation",
    )
    fake.script(Status(400, body=body))
    with pytest.raises(ModelRejected, match="content policy"):
        await OpenAIChat(make_client(), MODEL).complete(HELLO, max_tokens=10, temperature=0.0)


async def test_unprocessable_is_rejected(fake: FakeOpenAI, make_client: ClientFactory) -> None:
    fake.script(Status(422, body={"detail": "bad"}))
    with pytest.raises(ModelRejected):
        await OpenAIChat(make_client(), MODEL).complete(HELLO, max_tokens=10, temperature=0.0)


async def test_unsupported_setting_is_a_configuration_problem(
    fake: FakeOpenAI, make_client: ClientFactory
) -> None:
    body = openai_error(
        "Unsupported value: 'temperature' does not support 0.8 with this model.",
        "invalid_request_error",
        "unsupported_value",
        param="temperature",
    )
    fake.script(Status(400, body=body))
    with pytest.raises(ModelUnavailable, match="temperature"):
        await OpenAIChat(make_client(), MODEL).complete(HELLO, max_tokens=10, temperature=0.8)


async def test_timeout_is_unavailable(fake: FakeOpenAI, make_client: ClientFactory) -> None:
    fake.script(Delay(3.0, then=Reply("too late")))
    chat = OpenAIChat(make_client(timeout=0.3, max_retries=0), MODEL)
    started = time.monotonic()

    with pytest.raises(ModelUnavailable, match="timed out") as caught:
        await chat.complete(HELLO, max_tokens=10, temperature=0.0)

    assert isinstance(caught.value.__cause__, openai.APITimeoutError)
    assert time.monotonic() - started < 2.0


async def test_server_down_is_unavailable(make_client: ClientFactory) -> None:
    client = make_client(base_url=f"http://127.0.0.1:{free_port()}/v1", max_retries=0)
    with pytest.raises(ModelUnavailable, match="could not connect") as caught:
        await OpenAIChat(client, MODEL).complete(HELLO, max_tokens=10, temperature=0.0)
    assert isinstance(caught.value.__cause__, openai.APIConnectionError)


async def test_missing_usage_counts_zero_and_warns(
    fake: FakeOpenAI, make_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    fake.script(Reply("No usage from this server.", usage=False))
    with caplog.at_level(logging.WARNING, logger="llm.openai_chat"):
        result = await OpenAIChat(make_client(), MODEL).complete(
            HELLO, max_tokens=10, temperature=0.0
        )

    assert (result.text, result.usage.input_tokens, result.usage.output_tokens) == (
        "No usage from this server.",
        0,
        0,
    )
    assert any("usage" in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize("text", [None, "", "   \n"])
async def test_empty_answer_is_unavailable(
    fake: FakeOpenAI, make_client: ClientFactory, text: str | None
) -> None:
    fake.script(Reply(text))
    with pytest.raises(ModelUnavailable, match="empty answer"):
        await OpenAIChat(make_client(), MODEL).complete(HELLO, max_tokens=10, temperature=0.0)


async def test_refusal_is_rejected(fake: FakeOpenAI, make_client: ClientFactory) -> None:
    fake.script(Reply(None, refusal="I can't help with that."))
    with pytest.raises(ModelRejected, match="can't help"):
        await OpenAIChat(make_client(), MODEL).complete(HELLO, max_tokens=10, temperature=0.0)


async def test_content_filter_finish_is_rejected(
    fake: FakeOpenAI, make_client: ClientFactory
) -> None:
    fake.script(Reply("", finish_reason="content_filter"))
    with pytest.raises(ModelRejected, match="content filter"):
        await OpenAIChat(make_client(), MODEL).complete(HELLO, max_tokens=10, temperature=0.0)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (Raw("<html><body>Welcome to nginx!</body></html>", content_type="text/html"), "base URL"),
        (Raw("{not json"), "malformed JSON"),
        (Raw('{"choices": []}'), "empty answer"),
        (Raw('{"choices": [{"index": 0, "message": null}]}'), "empty answer"),
    ],
)
async def test_unreadable_answers_are_unavailable(
    fake: FakeOpenAI, make_client: ClientFactory, raw: Raw, expected: str
) -> None:
    fake.script(raw)
    with pytest.raises(ModelUnavailable, match=expected):
        await OpenAIChat(make_client(), MODEL).complete(HELLO, max_tokens=10, temperature=0.0)


async def test_minimal_server_answer_is_accepted(
    fake: FakeOpenAI, make_client: ClientFactory
) -> None:
    # Some OpenAI-compatible servers send only the bare minimum.
    fake.script(Raw('{"choices": [{"message": {"content": "Hi."}}]}'))
    result = await OpenAIChat(make_client(), MODEL).complete(HELLO, max_tokens=10, temperature=0.0)
    assert result == Completion(text="Hi.", usage=Usage(0, 0), model=MODEL)


def test_retry_after_parsing() -> None:
    now = 1_700_000_000.0
    assert retry_after_seconds({"Retry-After": "7"}) == 7.0
    assert retry_after_seconds({"retry-after": "0.25"}) == 0.25
    assert retry_after_seconds({"retry-after-ms": "250"}) == 0.25
    assert retry_after_seconds({"retry-after": formatdate(now + 30, usegmt=True)}, now=now) == 30.0
    assert retry_after_seconds({"retry-after": formatdate(now - 30, usegmt=True)}, now=now) == 0.0
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({"retry-after": "nan"}) is None
    assert retry_after_seconds({}) is None
    assert retry_after_seconds(None) is None


async def test_build_client_for_a_local_server_sends_a_placeholder_key(fake: FakeOpenAI) -> None:
    client = build_openai_client(None, fake.base_url, timeout=5.0, max_retries=0)
    try:
        result = await OpenAIChat(client, "local-model").complete(
            HELLO, max_tokens=10, temperature=0.0
        )
    finally:
        await client.close()
    assert "story about 0 pictures" in result.text
    assert fake.requests[0].headers["authorization"] == f"Bearer {LOCAL_API_KEY_PLACEHOLDER}"
    assert client.max_retries == 0
    assert cast(httpx.Timeout, client.timeout).read == 5.0


def test_build_client_without_any_key_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ModelUnavailable, match="OPENAI_API_KEY"):
        build_openai_client(None, None, timeout=5.0, max_retries=0)


def test_build_client_checks_its_numbers() -> None:
    with pytest.raises(ValueError):
        build_openai_client("k", None, timeout=0, max_retries=0)
    with pytest.raises(ValueError):
        build_openai_client("k", None, timeout=5, max_retries=-1)


def test_model_name_is_required() -> None:
    client = openai.AsyncOpenAI(api_key="k", base_url="http://127.0.0.1:9/v1")
    with pytest.raises(ValueError):
        OpenAIChat(client, " ")
