"""Gateway settings: one frozen object, read from the environment by load()."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from bus.blobs import Bucket, bucket_settings
from bus.liveness import HEARTBEAT_INTERVAL
from bus.settings import Env, SettingsError
from gateway.auth import ApiKeys
from gateway.jobs import webhooks
from gateway.jobs.webhooks import WebhookSettings
from gateway.pricing import PriceTable, parse_prices

MIB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    max_image_bytes: int = 10 * MIB
    max_video_bytes: int = 50 * MIB
    max_images: int = 10
    max_prompt_chars: int = 2000
    # A client that sends no byte for this long, or takes longer over the whole body, is
    # cut off (408): it would hold an in-flight slot while it trickles.
    upload_idle_seconds: float = 30.0
    upload_seconds: float = 300.0  # 50 MB at about 1.4 Mbit/s


@dataclass(frozen=True)
class Admission:
    """Who may ask for an analysis, and how often: keys, rate and in-flight caps."""

    api_keys: ApiKeys = field(default_factory=ApiKeys)  # empty: no key needed
    rate_per_minute: int = 0  # per key (per client address without keys); 0 is off
    rate_window: float = 60.0  # seconds; only tests shorten it
    # Analyses waited for at once in this gateway; 0 is no cap: work waits in the job
    # queue, bounded by Jobs.max_queued, not in a gateway's slots.
    max_in_flight: int = 0
    max_in_flight_per_key: int = 0  # analyses at once per key or address; 0 is no cap


@dataclass(frozen=True)
class Jobs:
    """How long jobs live, how many run in this gateway, and how many may wait."""

    ttl: float = 24 * 3600.0  # a job, its events and its media are gone after it
    # Jobs this gateway runs at once (0: a pure front door): as many as a story replica
    # takes at once (IMGSTORY_STORY_IN_FLIGHT); each is a coroutine waiting on NATS.
    workers: int = 64
    max_attempts: int = 3  # deliveries of one job (a gateway lost mid-job) before it fails
    lease: float = 30.0  # a worker silent this long has lost its job to another
    max_queued: int = 1000  # jobs queued or running in all; past it 503; 0: no bound
    max_queued_per_key: int = 0  # ... per API key (per address with keys off); 0: no bound
    inline_bytes: int = 512 * 1024  # an unkept job's uploads up to this ride the queue
    # Seconds a kept job's uploads and frames stay after it ended, for another take
    # (POST /jobs/{id}/again); 0: removed as soon as it ends.
    keep_media: float = 3600.0


@dataclass(frozen=True)
class Settings:
    nats_url: str = "nats://127.0.0.1:4222"
    host: str = "127.0.0.1"
    port: int = 8000
    limits: Limits = field(default_factory=Limits)
    max_frames: int = 8  # frames taken from a video
    frames_timeout: float = 120.0
    story_timeout: float = 300.0  # above the story service's own model timeout x retries
    translation_timeout: float = 300.0
    ping_timeout: float = 1.0
    liveness_window: float = 3.0  # a replica silent this long on a call is taken for gone
    attempts: int = 3  # sends of one stage call, each to whichever replica NATS picks
    bucket: Bucket = field(default_factory=Bucket)
    upload_dir: str | None = None  # temp files for uploads; None means the system's
    prices: PriceTable | None = None  # for the estimated cost in each response
    cors_origins: tuple[str, ...] = ()  # browser origins allowed to call the API; none: no CORS
    admission: Admission = field(default_factory=Admission)
    jobs: Jobs = field(default_factory=Jobs)
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)

    @property
    def longest_request(self) -> float:
        """Seconds beyond which no request can still be alive."""
        return self.frames_timeout + self.story_timeout + self.translation_timeout + 60


def load(env: Mapping[str, str] = os.environ) -> Settings:
    """Settings from the environment (see docs/configuration.md for each variable).

    Raises bus.settings.SettingsError for a value the gateway cannot run with.
    """
    read = Env(env)
    limits = Limits(
        max_image_bytes=int(read.number("IMGSTORY_MAX_IMAGE_MB", 10, positive=True) * MIB),
        max_video_bytes=int(read.number("IMGSTORY_MAX_VIDEO_MB", 50, positive=True) * MIB),
        max_images=read.integer("IMGSTORY_MAX_IMAGES", Limits.max_images, minimum=1),
        max_prompt_chars=read.integer(
            "IMGSTORY_MAX_PROMPT_CHARS", Limits.max_prompt_chars, minimum=1
        ),
        upload_idle_seconds=read.number(
            "IMGSTORY_UPLOAD_IDLE_SECONDS", Limits.upload_idle_seconds, positive=True
        ),
        upload_seconds=read.number("IMGSTORY_UPLOAD_SECONDS", Limits.upload_seconds, positive=True),
    )
    return Settings(
        nats_url=read.text("NATS_URL", Settings.nats_url),
        host=read.text("IMGSTORY_HOST", Settings.host),
        port=read.integer("IMGSTORY_PORT", Settings.port, minimum=0, maximum=65535),
        limits=limits,
        max_frames=read.integer("IMGSTORY_MAX_FRAMES", Settings.max_frames, minimum=1, maximum=64),
        frames_timeout=read.number(
            "IMGSTORY_FRAMES_TIMEOUT", Settings.frames_timeout, positive=True
        ),
        story_timeout=read.number("IMGSTORY_STORY_TIMEOUT", Settings.story_timeout, positive=True),
        translation_timeout=read.number(
            "IMGSTORY_TRANSLATION_TIMEOUT", Settings.translation_timeout, positive=True
        ),
        liveness_window=read.number(
            "IMGSTORY_LIVENESS_WINDOW", Settings.liveness_window, minimum=2 * HEARTBEAT_INTERVAL
        ),
        attempts=read.integer("IMGSTORY_STAGE_ATTEMPTS", Settings.attempts, minimum=1, maximum=10),
        bucket=bucket_settings(read),
        upload_dir=read.optional("IMGSTORY_UPLOAD_DIR"),
        prices=_prices(read.optional("IMGSTORY_PRICES")),
        cors_origins=_origins(read.optional("IMGSTORY_CORS_ORIGINS")),
        admission=_admission(read),
        jobs=_jobs(read, bucket_settings(read)),
        webhooks=webhooks.load(read),
    )


def _jobs(read: Env, bucket: Bucket) -> Jobs:
    jobs = Jobs(
        ttl=read.number("IMGSTORY_JOB_TTL", Jobs.ttl, minimum=60),
        workers=read.integer("IMGSTORY_JOB_WORKERS", Jobs.workers, minimum=0, maximum=1024),
        max_attempts=read.integer("IMGSTORY_JOB_ATTEMPTS", Jobs.max_attempts, minimum=1),
        lease=read.number("IMGSTORY_JOB_LEASE", Jobs.lease, minimum=3),
        max_queued=read.integer("IMGSTORY_MAX_QUEUED", Jobs.max_queued, minimum=0),
        max_queued_per_key=read.integer(
            "IMGSTORY_MAX_QUEUED_PER_KEY", Jobs.max_queued_per_key, minimum=0
        ),
        keep_media=read.number("IMGSTORY_JOB_KEEP_MEDIA", Jobs.keep_media, minimum=0),
    )
    if jobs.keep_media > jobs.ttl:
        raise SettingsError(
            f"IMGSTORY_JOB_KEEP_MEDIA ({jobs.keep_media:g} s) must be at most IMGSTORY_JOB_TTL "
            f"({jobs.ttl:g} s): a job's media go with it"
        )
    if bucket.ttl < jobs.ttl:
        raise SettingsError(
            f"IMGSTORY_BLOB_TTL ({bucket.ttl:g} s) must be at least IMGSTORY_JOB_TTL "
            f"({jobs.ttl:g} s): a job's media are kept in the blob bucket"
        )
    return jobs


def _origins(text: str | None) -> tuple[str, ...]:
    origins = tuple(o.strip().rstrip("/") for o in (text or "").split(",") if o.strip())
    for origin in origins:
        if origin != "*" and not origin.startswith(("http://", "https://")):
            raise SettingsError(
                f"IMGSTORY_CORS_ORIGINS: {origin!r} is not an origin like https://example.com"
            )
    return origins


def _prices(text: str | None) -> PriceTable | None:
    return parse_prices(text) if text and text.strip() else None


def _admission(read: Env) -> Admission:
    return Admission(
        api_keys=_api_keys(read.optional("IMGSTORY_API_KEYS")),
        rate_per_minute=read.integer(
            "IMGSTORY_RATE_LIMIT_PER_MINUTE", Admission.rate_per_minute, minimum=0
        ),
        max_in_flight=read.integer("IMGSTORY_MAX_IN_FLIGHT", Admission.max_in_flight, minimum=0),
        max_in_flight_per_key=read.integer(
            "IMGSTORY_MAX_IN_FLIGHT_PER_KEY", Admission.max_in_flight_per_key, minimum=0
        ),
    )


def _api_keys(text: str | None) -> ApiKeys:
    """Keys from ``k1,k2`` or ``@/path/file`` (one a line); no text means keys are off.

    Errors never quote the text: it holds keys.
    """
    if text is None:
        return ApiKeys()
    if text.startswith("@"):
        path = text[1:].strip()
        try:
            with open(path, encoding="utf-8") as file:
                entries = file.read().splitlines()
        except (OSError, UnicodeDecodeError) as err:
            reason = err.strerror if isinstance(err, OSError) else "it is not UTF-8 text"
            raise SettingsError(f"IMGSTORY_API_KEYS: cannot read {path}: {reason}") from None
    else:
        entries = text.split(",")
    try:
        return ApiKeys.parse(entries)
    except ValueError as err:
        raise SettingsError(f"IMGSTORY_API_KEYS: {err}") from None
