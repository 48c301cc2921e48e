"""ChatModel backend for OpenAI and any OpenAI-compatible Chat Completions server."""

from __future__ import annotations

import email.utils
import json
import logging
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Literal

import openai
from openai.types.chat import ChatCompletion, ChatCompletionMessage
from openai.types.chat.chat_completion import Choice
from opentelemetry.trace import SpanKind
from opentelemetry.util.types import AttributeValue

from bus import tracing
from contracts.messages import Usage
from contracts.text import cut_paragraphs
from llm.chat import Completion, ModelProfile
from llm.errors import ModelError, ModelRejected, ModelUnavailable, RateLimited
from llm.structured import structured

log = logging.getLogger(__name__)

# Local servers (vLLM, Ollama, llama.cpp) ignore the key, but the SDK refuses to run without one.
LOCAL_API_KEY_PLACEHOLDER = "not-needed"

KEY_REJECTED_MESSAGE = "the model provider rejected the API key (check OPENAI_API_KEY)"

# A 400 that names one of these request fields is about our configuration
# (e.g. a reasoning model that refuses `temperature`), not about what the user sent.
_CONFIG_PARAMS = frozenset({"model", "temperature", "max_tokens", "max_completion_tokens", "top_p"})
_CONFIG_CODES = frozenset({"unsupported_parameter", "unsupported_value", "model_not_found"})
_TOO_LONG_CODES = frozenset({"context_length_exceeded", "string_above_max_length"})
_POLICY_CODES = frozenset({"content_policy_violation", "content_filter"})

# Provider messages may echo credentials (OpenAI prints a masked key on 401); never pass them on.
_KEY_LIKE = re.compile(r"\b(?:sk|rk|pk|sess)-[A-Za-z0-9_\-*]{6,}")
_MAX_DETAIL_CHARS = 300


def retry_after_seconds(
    headers: Mapping[str, str] | None, *, now: float | None = None
) -> float | None:
    """Return the server's retry hint in seconds, or None when it gave none we can read.

    Reads `retry-after-ms` first (OpenAI's precise variant), then `retry-after`
    as seconds or as an HTTP date. Header names are matched case-insensitively.
    """
    if not headers:
        return None
    lowered = {key.lower(): value for key, value in headers.items()}
    millis = _finite_float(lowered.get("retry-after-ms"))
    if millis is not None:
        return max(millis, 0.0) / 1000.0
    raw = lowered.get("retry-after")
    if raw is None:
        return None
    seconds = _finite_float(raw)
    if seconds is not None:
        return max(seconds, 0.0)
    try:
        when = email.utils.parsedate_to_datetime(raw.strip())
    except (TypeError, ValueError, IndexError):
        return None
    current = time.time() if now is None else now
    return max(when.timestamp() - current, 0.0)


def _finite_float(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _redact(text: str, api_key: str) -> str:
    if api_key and len(api_key) >= 4:
        text = text.replace(api_key, "[redacted]")
    text = _KEY_LIKE.sub("[redacted]", text)
    text = " ".join(text.split())
    if len(text) > _MAX_DETAIL_CHARS:
        text = text[: _MAX_DETAIL_CHARS - 3].rstrip() + "..."
    return text


class OpenAIChat:
    """ChatModel that calls Chat Completions through an injected `openai.AsyncOpenAI` client."""

    # A capable remote model: Chat Completions models take image_url parts.
    profile = ModelProfile(sees_images=True)

    def __init__(
        self,
        client: openai.AsyncOpenAI,
        model: str,
        *,
        name: str | None = None,
        max_tokens_field: Literal["max_completion_tokens", "max_tokens"] = "max_completion_tokens",
    ) -> None:
        """Wrap `client` to call `model`.

        `max_tokens_field` picks how the output cap is sent: OpenAI's current
        `max_completion_tokens` (required by its reasoning models) or the older
        `max_tokens` that some OpenAI-compatible servers still expect.
        Raises ValueError when `model` is empty.
        """
        if not model.strip():
            raise ValueError("the model name must not be empty")
        self._client = client
        self.model = model
        self.name = name or model
        self._max_tokens_field = max_tokens_field

    async def complete(
        self,
        messages: list[dict[str, Any]],
        *,
        max_tokens: int,
        temperature: float,
        script: str | None = None,
        on_text: Callable[[str], None] | None = None,
        max_paragraphs: int | None = None,
        names: Sequence[str] = (),
        json_schema: dict[str, Any] | None = None,
    ) -> Completion:
        """Send `messages` and return the first answer with its token usage.

        `script` and `names` are accepted for the ChatModel protocol and ignored: the
        prompt asks for the script. `json_schema` is sent as the structured-output
        `response_format` (in place of any grammar of the backend's own). With `on_text` the answer is streamed and each piece passed to it
        as it arrives (on the event loop); usage then comes from the stream's last chunk.
        `max_paragraphs` cuts the answer after that many paragraphs; the server still
        writes the rest (it is billed, and its usage counted).
        Raises RateLimited (429, with the server's retry hint), ModelUnavailable
        (server errors, network failures, timeouts, rejected key, unknown model,
        empty answer) or ModelRejected (the provider refused the content we sent).
        """
        # A client span per call (the SDK's own retries inside it), named and described
        # with OpenTelemetry's gen_ai names; an error leaving it is recorded on it.
        with tracing.span(
            f"chat {self.model}",
            kind=SpanKind.CLIENT,
            attributes=self._request_attributes(max_tokens, temperature, on_text is not None),
        ) as span:
            completion = await self._complete(
                messages,
                max_tokens,
                temperature,
                on_text,
                structured(self._extra_body(script, max_paragraphs, names), json_schema),
            )
            completion = self._finish(completion, script, max_paragraphs)
            span.set_attributes(
                {
                    "gen_ai.response.model": completion.model,
                    "gen_ai.usage.input_tokens": completion.usage.input_tokens,
                    "gen_ai.usage.output_tokens": completion.usage.output_tokens,
                }
            )
            return completion

    def _extra_body(
        self, script: str | None, max_paragraphs: int | None, names: Sequence[str] = ()
    ) -> dict[str, Any] | None:
        """Fields beyond the OpenAI API to send with a request; OpenAI takes none."""
        return None

    def _finish(
        self, completion: Completion, script: str | None, max_paragraphs: int | None
    ) -> Completion:
        """The answer as callers get it: never more than `max_paragraphs` paragraphs."""
        if max_paragraphs is None:
            return completion
        return replace(completion, text=cut_paragraphs(completion.text, max_paragraphs))

    def _request_attributes(
        self, max_tokens: int, temperature: float, streamed: bool
    ) -> dict[str, AttributeValue]:
        url = self._client.base_url
        return {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": self.model,
            "gen_ai.request.max_tokens": max_tokens,
            "gen_ai.request.temperature": temperature,
            "imgstory.streamed": streamed,
            "server.address": url.host,
            "server.port": url.port or (443 if url.scheme == "https" else 80),
        }

    async def _complete(
        self,
        messages: list[dict[str, Any]],
        max_tokens: int,
        temperature: float,
        on_text: Callable[[str], None] | None,
        extra_body: dict[str, Any] | None,
    ) -> Completion:
        options: dict[str, Any] = {self._max_tokens_field: max_tokens}
        if extra_body:
            options["extra_body"] = extra_body
        try:
            if on_text is None:
                response = await self._client.chat.completions.create(
                    model=self.model,
                    messages=messages,  # type: ignore[arg-type]  # plain dicts in the documented shape
                    temperature=temperature,
                    **options,
                )
            else:
                response = await self._streamed(messages, temperature, options, on_text)
        except openai.RateLimitError as err:
            raise self._rate_limited(err) from err
        except openai.AuthenticationError as err:
            raise ModelUnavailable(KEY_REJECTED_MESSAGE) from err
        except openai.PermissionDeniedError as err:
            raise ModelUnavailable(
                f"the model provider denied this API key access to model {self.model!r} "
                "(check OPENAI_API_KEY and the key's permissions)"
            ) from err
        except openai.NotFoundError as err:
            raise ModelUnavailable(
                f"the model provider does not know the model {self.model!r} "
                "(check the model name and the base URL)"
            ) from err
        except (openai.BadRequestError, openai.UnprocessableEntityError) as err:
            raise self._bad_request(err) from err
        except openai.InternalServerError as err:
            raise ModelUnavailable(
                f"the model provider is unavailable (HTTP {err.status_code} server error); try again later"
            ) from err
        except openai.APIStatusError as err:
            raise self._other_status(err) from err
        except (openai.APIError, json.JSONDecodeError) as err:
            # No answer, or none we can read: timeouts, refused connections, malformed bodies.
            raise ModelUnavailable(_no_answer(err)) from err
        return self._completion(response, max_tokens)

    async def _streamed(
        self,
        messages: list[dict[str, Any]],
        temperature: float,
        options: dict[str, Any],
        on_text: Callable[[str], None],
    ) -> ChatCompletion:
        """Stream the answer to `on_text`, then return it as one ChatCompletion."""
        # The token limit's field name (max_tokens or max_completion_tokens) is chosen at
        # run time, which the SDK's overloads cannot follow.
        stream = await self._client.chat.completions.create(  # type: ignore[call-overload]
            model=self.model,
            messages=messages,
            temperature=temperature,
            stream=True,
            stream_options={"include_usage": True},
            **options,
        )
        pieces: list[str] = []
        refusal: list[str] = []
        finish_reason = None
        usage = None
        model = None
        async for chunk in stream:
            model = getattr(chunk, "model", None) or model
            usage = getattr(chunk, "usage", None) or usage
            for choice in getattr(chunk, "choices", None) or []:
                if getattr(choice, "index", 0) != 0:
                    continue
                delta = getattr(choice, "delta", None)
                text = getattr(delta, "content", None)
                if text:
                    pieces.append(text)
                    on_text(text)
                if getattr(delta, "refusal", None):
                    refusal.append(delta.refusal)  # type: ignore[union-attr]  # getattr just said it is there
                finish_reason = getattr(choice, "finish_reason", None) or finish_reason
        message = ChatCompletionMessage.model_construct(
            role="assistant", content="".join(pieces) or None, refusal="".join(refusal) or None
        )
        choice = Choice.model_construct(index=0, message=message, finish_reason=finish_reason)
        return ChatCompletion.model_construct(
            id="stream",
            object="chat.completion",
            created=0,
            model=model or self.model,
            choices=[choice],
            usage=usage,
        )

    def _completion(self, response: object, max_tokens: int) -> Completion:
        if not isinstance(response, ChatCompletion):
            # A 200 that is not JSON (e.g. an HTML page from a wrong base URL) comes back as text.
            raise ModelUnavailable(
                "the model server did not answer with a chat completion (check the base URL)"
            )
        # The SDK builds responses without validation, so a sloppy server can leave any field out.
        choices = getattr(response, "choices", None) or []
        choice = choices[0] if choices else None
        message = getattr(choice, "message", None)
        if message is None:
            raise ModelUnavailable("the model returned an empty answer")
        finish_reason = getattr(choice, "finish_reason", None)
        refusal = getattr(message, "refusal", None)
        if refusal:
            raise ModelRejected(f"the model declined to answer: {self._detail(str(refusal))}")
        if finish_reason == "content_filter":
            raise ModelRejected("the model provider's content filter withheld the answer")
        text = getattr(message, "content", None)
        if not isinstance(text, str) or not text.strip():
            if finish_reason == "length":
                raise ModelUnavailable(
                    "the model returned an empty answer (it used its whole token limit before writing)"
                )
            raise ModelUnavailable("the model returned an empty answer")
        if finish_reason == "length":
            log.warning(
                "model %s hit the %d token limit; the answer is cut short", self.model, max_tokens
            )

        usage = getattr(response, "usage", None)
        if usage is None:
            log.warning("model server for %s sent no token usage; counting 0 tokens", self.model)
            input_tokens = output_tokens = 0
        else:
            # Lenient parsing lets a sloppy server send null counts.
            input_tokens = int(getattr(usage, "prompt_tokens", None) or 0)
            output_tokens = int(getattr(usage, "completion_tokens", None) or 0)
        return Completion(
            text=text,
            usage=Usage(input_tokens=input_tokens, output_tokens=output_tokens),
            model=str(getattr(response, "model", None) or self.model),
        )

    def _rate_limited(self, err: openai.RateLimitError) -> ModelError:
        if str(err.code or "") == "insufficient_quota":
            # Retrying cannot help until someone pays, so this is not a rate limit.
            return ModelUnavailable(
                "the model provider account has no quota left (check billing for OPENAI_API_KEY)"
            )
        retry_after = retry_after_seconds(err.response.headers)
        message = "the model provider is rate limiting requests"
        if retry_after is not None:
            message += f"; retry in {math.ceil(retry_after)} s"
        log.warning("rate limited by the model provider (retry after %s s)", retry_after)
        return RateLimited(message, retry_after=retry_after)

    def _bad_request(self, err: openai.APIStatusError) -> ModelError:
        # Servers differ: llama.cpp sends a numeric code, so normalise to text.
        code = str(err.code or "").lower()
        param = str(err.param or "").lower()
        detail = self._provider_detail(err)
        log.warning(
            "model provider refused the request (HTTP %d, code %s): %s",
            err.status_code,
            code,
            detail,
        )
        if code in _CONFIG_CODES or param in _CONFIG_PARAMS:
            return ModelUnavailable(
                f"the model {self.model!r} does not accept our request settings: {detail}"
            )
        if code in _TOO_LONG_CODES:
            return ModelRejected(
                "the request is too long for the model (try fewer pictures or a shorter prompt)"
            )
        if code in _POLICY_CODES:
            return ModelRejected("the model provider's content policy blocked this request")
        return ModelRejected(f"the model provider rejected the request: {detail}")

    def _other_status(self, err: openai.APIStatusError) -> ModelError:
        status = err.status_code
        log.warning("model provider answered HTTP %d: %s", status, self._provider_detail(err))
        if status >= 500:
            return ModelUnavailable(
                f"the model provider is unavailable (HTTP {status} server error); try again later"
            )
        if status == 413:
            return ModelRejected(
                "the request is too large for the model provider (try fewer or smaller pictures)"
            )
        if status == 408:
            return ModelUnavailable("the request to the model provider timed out")
        return ModelUnavailable(f"the model provider answered with unexpected HTTP status {status}")

    def _provider_detail(self, err: openai.APIStatusError) -> str:
        body = err.body
        message = body.get("message") if isinstance(body, Mapping) else None
        if isinstance(message, str) and message.strip():
            return self._detail(message)
        return f"HTTP {err.status_code}"

    def _detail(self, text: str) -> str:
        return _redact(text, getattr(self._client, "api_key", "") or "")


def _no_answer(err: Exception) -> str:
    """What to tell the user when the provider gave no readable answer."""
    if isinstance(err, openai.APITimeoutError):
        return "the request to the model provider timed out"
    if isinstance(err, openai.APIConnectionError):
        return "the model provider is unavailable: could not connect to it"
    if isinstance(err, json.JSONDecodeError):
        # The SDK lets a broken JSON body of a 200 answer escape unwrapped.
        return "the model server sent malformed JSON (check the base URL)"
    # Left over: answers the SDK could not read (e.g. APIResponseValidationError).
    return "the model provider sent an answer we could not read"


def build_openai_client(
    api_key: str | None, base_url: str | None, timeout: float, max_retries: int
) -> openai.AsyncOpenAI:
    """Build the `AsyncOpenAI` client that OpenAIChat uses.

    `base_url` None means the SDK default (api.openai.com, or OPENAI_BASE_URL).
    With a `base_url` and no `api_key`, a placeholder key is sent because local
    OpenAI-compatible servers ignore it. `timeout` is in seconds per request;
    `max_retries` is how often the SDK retries 429/5xx/connection errors itself.
    Raises ValueError for a non-positive timeout or negative max_retries, and
    ModelUnavailable when no API key is available for the OpenAI API.
    """
    if timeout <= 0:
        raise ValueError("timeout must be a positive number of seconds")
    if max_retries < 0:
        raise ValueError("max_retries must not be negative")
    key = api_key or None
    if key is None and base_url:
        key = LOCAL_API_KEY_PLACEHOLDER
    try:
        return openai.AsyncOpenAI(
            api_key=key,
            base_url=base_url or None,
            # A short connect timeout reports a server that is down quickly,
            # while `timeout` leaves room for long generations.
            timeout=openai.Timeout(timeout, connect=min(timeout, 10.0)),
            max_retries=max_retries,
        )
    except openai.OpenAIError as err:
        raise ModelUnavailable(
            "no API key is configured for the model provider (set OPENAI_API_KEY)"
        ) from err
