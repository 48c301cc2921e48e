"""One request's side channel, as its caller hears it: heartbeats, paragraphs, progress."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from types import TracebackType

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError

from bus.liveness import Heartbeats, Liveness
from contracts.messages import Alive, Paragraph, Progress, Stage
from contracts.subjects import progress_subject

log = logging.getLogger(__name__)

ProgressListener = Callable[[Progress], None]
ParagraphListener = Callable[[int, str], None]  # index, text

_decoder = msgspec.msgpack.Decoder(Progress | Paragraph | Alive)


class RequestChannel:
    """The side subject of one request, subscribed while the channel is entered.

    Every replica holding one of the request's calls beats on it (fed to ``heartbeats``,
    which ``liveness`` hands to ``rpc.call``); services publish their progress and the
    story's finished paragraphs on it, and each goes to the listeners registered with
    ``on_progress`` and ``on_paragraph``. The caller's own news (``stage``, ``text``)
    goes to the same progress listeners, without a trip through NATS.
    """

    def __init__(self, nc: Client, request_id: str) -> None:
        self.nc = nc
        self.request_id = request_id
        self.subject = progress_subject(request_id)
        self.heartbeats = Heartbeats(self.subject)
        self._progress: list[ProgressListener] = []
        self._paragraphs: list[ParagraphListener] = []
        self._subscription: Subscription | None = None

    def on_progress(self, listener: ProgressListener) -> None:
        """Hand ``listener`` every Progress from now on, the services' and the caller's."""
        self._progress.append(listener)

    def on_paragraph(self, listener: ParagraphListener) -> None:
        """Hand ``listener`` the index and text of every paragraph a service finishes."""
        self._paragraphs.append(listener)

    def liveness(self, *, window: float, attempts: int) -> Liveness:
        """How ``rpc.call`` tells, from this channel's heartbeats, a replica that died."""
        return Liveness(self.heartbeats, window=window, attempts=attempts)

    def news_subject(self, *, paragraphs: bool = False) -> str | None:
        """What a request names as its ``progress`` subject: this one while someone
        listens to progress (or, with ``paragraphs``, to paragraphs), else None, so
        services publish nothing nobody reads."""
        wanted = bool(self._progress) or (paragraphs and bool(self._paragraphs))
        return self.subject if wanted else None

    def stage(self, stage: Stage, detail: str = "") -> None:
        """Tell the progress listeners that the caller's own work reached ``stage``."""
        self._tell(Progress(request_id=self.request_id, stage=stage, detail=detail))

    def text(self, stage: Stage, piece: str) -> None:
        """Tell the progress listeners a piece of text the caller itself made."""
        self._tell(Progress(request_id=self.request_id, stage=stage, text=piece))

    async def __aenter__(self) -> RequestChannel:
        self._subscription = await self.nc.subscribe(self.subject, cb=self._relay)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._subscription is not None:
            with contextlib.suppress(NatsError):  # a closed connection has dropped it anyway
                await self._subscription.unsubscribe()
            self._subscription = None

    def _tell(self, news: Progress) -> None:
        for listener in self._progress:
            listener(news)

    async def _relay(self, msg: Msg) -> None:
        try:
            news = _decoder.decode(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            log.warning("request %s: ignored a malformed progress message", self.request_id)
            return
        if isinstance(news, Alive):
            self.heartbeats.beat(news.call_id)
        elif isinstance(news, Paragraph):
            for listener in self._paragraphs:
                listener(news.index, news.text)
        else:
            self._tell(news)
