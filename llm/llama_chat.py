"""ChatModel backend that runs a GGUF model in-process with llama-cpp-python."""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import random
import re
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from contracts.messages import Usage
from contracts.text import cut_paragraphs
from llm.chat import Completion, ModelProfile
from llm.errors import ModelRejected, ModelUnavailable
from llm.script_mask import ThaiMask, thai_text_layout
from llm.token_watch import TokenWatcher

log = logging.getLogger(__name__)

SCRIPTS = ("thai",)


_TOO_LONG = re.compile(r"exceed context window|exceeds n_ctx", re.IGNORECASE)


def default_threads() -> int:
    """The number of CPU cores this process may use (llama-cpp's own default is half)."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # not on Linux
        return max(os.cpu_count() or 1, 1)


class LlamaChat:
    """ChatModel that generates with a local GGUF model through llama-cpp-python.

    The model is loaded once, in the constructor (seconds; call it from a thread
    at start-up if an event loop is running). Generations run in a worker thread,
    one at a time per instance: concurrent calls queue in arrival order.
    """

    # A small model on this machine's CPU, one generation at a time; it sees images
    # when a vision projector is loaded.
    profile = ModelProfile(small=True, one_at_a_time=True)

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        *,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        mmproj_path: str | os.PathLike[str] | None = None,
        name: str | None = None,
        seed: int | None = None,
        repeat_penalty: float = 1.1,
    ) -> None:
        """Load the model at `model_path` (and the vision projector at `mmproj_path`, if any).

        `seed` makes sampling reproducible (every call starts from it); None draws
        a fresh seed per call. `repeat_penalty` discourages the loops small models fall into.
        Raises ModelUnavailable when a file is missing or llama.cpp cannot load it,
        and ValueError for a non-positive `n_ctx` or `n_threads`.
        """
        try:
            import llama_cpp  # imported here: loading the native library takes time and memory
        except ImportError as err:
            raise ModelUnavailable(
                "llama.cpp is not installed in this environment: set IMGSTORY_LOCAL_SERVER_URL "
                "to a running engine (`make run` starts one) or pip install 'imgstory[inprocess]'"
            ) from err

        if n_ctx <= 0:
            raise ValueError("n_ctx must be a positive number of tokens")
        threads = default_threads() if n_threads is None else n_threads
        if threads <= 0:
            raise ValueError("n_threads must be positive")
        path = Path(model_path)
        if not path.is_file():
            raise ModelUnavailable(f"the local model file {path} does not exist")
        handler = None
        if mmproj_path is not None:
            projector = Path(mmproj_path)
            if not projector.is_file():
                raise ModelUnavailable(f"the vision projector file {projector} does not exist")
            handler = _vision_handler(projector)
        started = time.perf_counter()
        try:
            self._llama = llama_cpp.Llama(
                model_path=str(path),
                n_ctx=n_ctx,
                n_threads=threads,
                n_threads_batch=threads,
                n_gpu_layers=0,
                chat_handler=handler,
                seed=seed if seed is not None else llama_cpp.LLAMA_DEFAULT_SEED,
                verbose=False,
            )
        except ValueError as err:
            raise ModelUnavailable(
                f"llama.cpp could not load the model {path.name}: {err}"
            ) from err
        if handler is not None:
            try:
                # The handler opens the projector on the first request; open it now so
                # one that does not fit the model fails at start-up instead.
                handler._init_mtmd_context(self._llama)
            except ValueError as err:
                self._llama.close()
                raise ModelUnavailable(
                    f"the vision projector {projector.name} does not fit the model {path.name}: {err}"
                ) from err
        # Free the model at interpreter exit while stderr is still open: llama-cpp-python's
        # own __del__ fails then when a vision projector is loaded.
        self._release = weakref.finalize(self, self._llama.close)
        self._llama_cpp = llama_cpp
        self.load_seconds = time.perf_counter() - started
        self.model_path = path
        self.name = name or path.stem
        self.profile = replace(LlamaChat.profile, sees_images=handler is not None)
        self.n_ctx = self._llama.n_ctx()
        self._seed = seed
        self._repeat_penalty = repeat_penalty
        self._thai_mask: ThaiMask | None = None
        # The asyncio lock queues callers fairly without tying up executor threads; the
        # thread lock still guards the model if a cancelled call's thread is finishing.
        self._queue = asyncio.Lock()
        self._busy = threading.Lock()
        log.info(
            "loaded local model %s in %.1f s (context %d tokens, %d threads%s)",
            path.name,
            self.load_seconds,
            self.n_ctx,
            threads,
            ", vision" if self.profile.sees_images else "",
        )

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
        """Generate the answer to `messages` and return it with the real token counts.

        `script="thai"` constrains sampling to Thai script (see llm.script_mask). `on_text`
        is called from the worker thread with each new piece of text as it is
        generated; it must be quick and thread-safe (e.g. `loop.call_soon_threadsafe`).
        The pieces are a preview: the returned Completion is authoritative (a loop cut
        off at the end may have been previewed). With `max_paragraphs`, generation stops as
        soon as a paragraph past the `max_paragraphs`-th begins. `names` need nothing here:
        only a Thai answer's characters are constrained. `json_schema` is not followed:
        the answer is plain text, which its caller reads as such.
        Raises ValueError for image parts when the model has no vision projector,
        for image URLs that are not data URLs, for an unknown `script` or a
        non-positive `max_tokens`; ModelRejected when the prompt does not fit the
        context or a picture cannot be read; ModelUnavailable when llama.cpp fails.
        """
        if max_tokens <= 0:
            raise ValueError("max_tokens must be positive")
        if max_paragraphs is not None and max_paragraphs <= 0:
            raise ValueError("max_paragraphs must be positive")
        if script is not None and script not in SCRIPTS:
            raise ValueError(f"unknown script {script!r}; supported: {', '.join(SCRIPTS)}")
        prepared = self._prepare(messages)
        cancelled = threading.Event()
        async with self._queue:
            try:
                return await asyncio.to_thread(
                    self._generate,
                    prepared,
                    max_tokens,
                    temperature,
                    script,
                    on_text,
                    cancelled,
                    max_paragraphs,
                )
            except asyncio.CancelledError:
                cancelled.set()  # the worker thread stops at its next token
                raise

    def close(self) -> None:
        """Free the model's memory; the instance cannot be used afterwards."""
        with self._busy:
            self._release()

    def _prepare(self, messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        prepared: list[dict[str, Any]] = []
        for message in messages:
            content = message.get("content")
            if isinstance(content, list):
                has_image = any(part.get("type") == "image_url" for part in content)
                if has_image and not self.profile.sees_images:
                    raise ValueError(
                        f"the local model {self.name} cannot see images (it has no vision "
                        "projector): describe the pictures in text instead"
                    )
                if has_image:
                    for part in content:
                        if part.get("type") == "image_url" and not _image_url(part).startswith(
                            "data:"
                        ):
                            raise ValueError("the local model only takes pictures as data: URLs")
                    prepared.append(dict(message))
                    continue
                # Text-only chat templates expect a string, so join the text parts.
                text = "\n\n".join(
                    str(part.get("text", "")) for part in content if part.get("type") == "text"
                )
                prepared.append({**message, "content": text})
            else:
                prepared.append(dict(message))
        return prepared

    def _mask(self, script: str | None) -> ThaiMask | None:
        if script is None:
            return None
        if self._thai_mask is None:
            started = time.perf_counter()
            llama_cpp = self._llama_cpp
            vocab = llama_cpp.llama_model_get_vocab(self._llama.model)
            tokens = range(self._llama.n_vocab())
            vocabulary = [self._llama.detokenize([token]) for token in tokens]
            ends = [token for token in tokens if llama_cpp.llama_vocab_is_eog(vocab, token)]
            self._thai_mask = ThaiMask(vocabulary, ends)
            log.info(
                "built the Thai script mask for %s in %.1f s (%d of %d tokens allowed)",
                self.name,
                time.perf_counter() - started,
                self._thai_mask.allowed_tokens,
                len(vocabulary),
            )
        return self._thai_mask

    def _generate(
        self,
        messages: list[dict[str, Any]],
        max_tokens: int,
        temperature: float,
        script: str | None,
        on_text: Callable[[str], None] | None,
        cancelled: threading.Event,
        max_paragraphs: int | None,
    ) -> Completion:
        with self._busy:
            if cancelled.is_set():
                raise ModelUnavailable("the request was cancelled before the model started")
            watcher = TokenWatcher(
                self._llama, on_text, cancelled, self._mask(script), max_paragraphs=max_paragraphs
            )
            seed = self._seed if self._seed is not None else random.randrange(2**31)
            started = time.perf_counter()
            try:
                response = self._llama.create_chat_completion(
                    messages=messages,
                    max_tokens=max_tokens,
                    temperature=temperature,
                    repeat_penalty=self._repeat_penalty,
                    seed=seed,
                    logits_processor=self._llama_cpp.LogitsProcessorList([watcher]),
                )
            except ValueError as err:
                raise self._value_error(err) from err
            except RuntimeError as err:
                raise ModelUnavailable(
                    f"the local model {self.name} failed while generating: {err}"
                ) from err
            elapsed = time.perf_counter() - started
        return self._completion(response, watcher, max_tokens, max_paragraphs, elapsed)

    def _completion(
        self,
        response: Any,
        watcher: TokenWatcher,
        max_tokens: int,
        max_paragraphs: int | None,
        elapsed: float,
    ) -> Completion:
        choice = response["choices"][0]
        text = choice["message"].get("content") or ""
        usage = response.get("usage") or {}
        input_tokens = int(usage.get("prompt_tokens") or 0)
        output_tokens = int(usage.get("completion_tokens") or 0)
        if watcher.loop_at is not None:
            text = watcher.text_before_loop()
            log.warning(
                "local model %s fell into a repetition loop; cut its answer at %d of %d tokens",
                self.name,
                watcher.loop_at,
                output_tokens,
            )
        elif watcher.past_paragraphs:
            log.info(
                "local model %s began paragraph %d of an answer of %d: stopped it there",
                self.name,
                (max_paragraphs or 0) + 1,
                max_paragraphs or 0,
            )
        elif choice.get("finish_reason") == "length":
            log.warning(
                "local model %s hit the %d token limit; the answer is cut short",
                self.name,
                max_tokens,
            )
        if input_tokens + max_tokens > self.n_ctx:
            log.warning(
                "local model %s: %d prompt tokens left room for only %d of %d answer tokens",
                self.name,
                input_tokens,
                self.n_ctx - input_tokens,
                max_tokens,
            )
        if watcher.masked:
            text = thai_text_layout(text)
        text = cut_paragraphs(text, max_paragraphs)
        watcher.finish(text)
        if not text.strip():
            raise ModelUnavailable("the model returned an empty answer")
        log.info(
            "local model %s: %d prompt + %d answer tokens in %.1f s (%.1f tokens/s)",
            self.name,
            input_tokens,
            output_tokens,
            elapsed,
            output_tokens / elapsed if elapsed > 0 else 0.0,
        )
        return Completion(
            text=text,
            usage=Usage(input_tokens=input_tokens, output_tokens=output_tokens),
            model=self.name,
        )

    def _value_error(self, err: ValueError) -> Exception:
        message = str(err)
        if _TOO_LONG.search(message):
            found = re.search(r"\((\d+)\)|(\d+) >", message)
            count = next((group for group in found.groups() if group), None) if found else None
            size = f"{count} tokens" if count else "the prompt"
            return ModelRejected(
                f"the request is too long for the local model: {size} do not fit its "
                f"{self.n_ctx}-token context (try fewer pictures or a shorter text)"
            )
        if "bitmap" in message.lower() or "image" in message.lower():
            return ModelRejected("the local model could not read one of the pictures")
        return ModelUnavailable(
            f"the local model {self.name} could not handle the request: {message}"
        )


def _vision_handler(projector: Path) -> Any:
    """A chat handler that sends pictures through libmtmd with the given projector.

    MTMDChatHandler is llama-cpp-python's generic libmtmd handler: it renders the
    model's own chat template, so it fits any vision model llama.cpp supports. It
    hands the template list-valued content; we flatten each message to one string
    with libmtmd's media marker where a picture goes (as llama-server does), which
    text-style templates render correctly and libmtmd wraps in the model's own
    image tokens.
    """
    from llama_cpp import _logger, mtmd_cpp
    from llama_cpp.llama_chat_format import MTMDChatHandler

    # libmtmd logs every prompt (user text included) to stderr unless routed through
    # llama-cpp-python's logger, which drops it when verbose is off.
    mtmd_cpp.mtmd_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))
    mtmd_cpp.mtmd_helper_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))

    class FlatMTMDChatHandler(MTMDChatHandler):
        @classmethod
        def _convert_message_for_template(cls, message: Any, media_marker: str) -> dict[str, Any]:
            content = message.get("content")
            if not isinstance(content, list):
                return dict(message)
            pieces = [
                media_marker if part.get("type") == "image_url" else str(part.get("text", ""))
                for part in content
                if part.get("type") in ("image_url", "text")
            ]
            return {**message, "content": "\n".join(pieces)}

    return FlatMTMDChatHandler(clip_model_path=str(projector), verbose=False, use_gpu=False)


def _image_url(part: dict[str, Any]) -> str:
    value = part.get("image_url")
    if isinstance(value, dict):
        value = value.get("url")
    return value if isinstance(value, str) else ""
