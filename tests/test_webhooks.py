"""Jobs' webhooks: settings, SSRF checks, Standard Webhooks signatures, and durable
delivery on a real NATS to a real HTTP receiver on loopback."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import os
import time
from collections.abc import Iterator

import pytest
import standardwebhooks
from nats.aio.client import Client

from bus.jobs import JobStore, Versioned
from bus.settings import Env, SettingsError
from contracts.messages import JobRecord, JobStatus, JobUpload, MediaKind, WebhookStatus
from contracts.subjects import WEBHOOKS_SENDERS, WEBHOOKS_STREAM
from gateway.jobs.deliveries import (
    Senders,
    open_deliveries,
    parse_retry_after,
    pending_webhook,
    queued_deliveries,
    request_delivery,
    retry_delay,
)
from gateway.jobs.webhooks import (
    WebhookRefused,
    WebhookSettings,
    check_target,
    is_public,
    load,
    parse_secret,
    signed_headers,
)
from tests.support.receiver import Receiver, running_receiver

SECRET_BYTES = os.urandom(32)
SECRET = "whsec_" + base64.b64encode(SECRET_BYTES).decode()
# Fast tries: tens of milliseconds apart; the receiver is on loopback, so allowed.
FAST = WebhookSettings(
    secret=SECRET_BYTES,
    allow_private=True,
    retry_for=30.0,
    timeout=2.0,
    senders=2,
    first_backoff=0.02,
    max_backoff=0.1,
)


# --- settings --------------------------------------------------------------------------


def test_no_secret_means_webhooks_are_off() -> None:
    settings = load(Env({}))
    assert settings.secret is None and not settings.enabled
    assert (settings.allow_private, settings.retry_for, settings.timeout) == (False, 86400.0, 10.0)


def test_the_settings_are_read_from_the_environment() -> None:
    settings = load(
        Env(
            {
                "IMGSTORY_WEBHOOK_SECRET": SECRET,
                "IMGSTORY_WEBHOOK_ALLOW_PRIVATE": "1",
                "IMGSTORY_WEBHOOK_RETRY_FOR": "3600",
                "IMGSTORY_WEBHOOK_TIMEOUT": "5",
                "IMGSTORY_WEBHOOK_SENDERS": "0",
            }
        )
    )
    assert settings.secret == SECRET_BYTES
    assert (settings.allow_private, settings.retry_for, settings.timeout, settings.senders) == (
        True,
        3600.0,
        5.0,
        0,
    )
    assert SECRET not in repr(settings)


def test_an_unpadded_secret_is_read() -> None:
    secret = base64.b64encode(os.urandom(25)).decode().rstrip("=")
    assert parse_secret("whsec_" + secret) == base64.b64decode(secret + "===")


@pytest.mark.parametrize(
    ("secret", "why"),
    [
        (base64.b64encode(os.urandom(32)).decode(), "whsec_ followed by base64"),
        ("whsec_not*base64!", "not base64"),
        ("whsec_" + base64.b64encode(b"short").decode(), "at least 24 bytes"),
        ("whsec_", "at least 24 bytes"),
    ],
)
def test_a_bad_secret_is_refused_without_quoting_it(secret: str, why: str) -> None:
    with pytest.raises(SettingsError, match="IMGSTORY_WEBHOOK_SECRET") as refused:
        load(Env({"IMGSTORY_WEBHOOK_SECRET": secret}))
    assert why in str(refused.value)
    payload = secret.removeprefix("whsec_")
    if payload:
        assert payload not in str(refused.value)


def test_a_bad_retry_bound_is_refused() -> None:
    with pytest.raises(SettingsError, match="IMGSTORY_WEBHOOK_RETRY_FOR"):
        load(Env({"IMGSTORY_WEBHOOK_RETRY_FOR": "0"}))


# --- the target ------------------------------------------------------------------------

STRICT = WebhookSettings(secret=SECRET_BYTES)
PRIVATE = [
    "http://127.0.0.1/hook",
    "http://localhost:8080/hook",  # a host name that resolves to loopback
    "http://10.1.2.3/hook",
    "http://192.168.0.10/hook",
    "http://172.16.5.4/hook",
    "http://169.254.169.254/latest/meta-data/",  # the cloud metadata service
    "http://100.64.0.1/",  # carrier-grade NAT
    "http://0.0.0.0/",
    "http://2130706433/",  # 127.0.0.1 as one number
    "http://224.0.0.1/",
    "http://[::1]/hook",
    "http://[fd00::1]/hook",
    "http://[fe80::1]/hook",
    "http://[::]/",
    "http://[::ffff:127.0.0.1]/hook",  # IPv4-mapped loopback
    "http://[::ffff:a9fe:a9fe]/",  # IPv4-mapped 169.254.169.254
    "http://[64:ff9b::7f00:1]/",  # NAT64 loopback
    "http://[2002:7f00:1::1]/",  # 6to4 loopback
    "http://[ff02::1]/",
]


@pytest.mark.parametrize("url", PRIVATE)
async def test_a_private_target_is_refused(url: str) -> None:
    with pytest.raises(WebhookRefused, match="not a public address"):
        await check_target(url, STRICT)


@pytest.mark.parametrize("url", [u for u in PRIVATE if "ff02" not in u and "224." not in u])
async def test_a_private_target_is_accepted_when_allowed(url: str) -> None:
    allowed = WebhookSettings(secret=SECRET_BYTES, allow_private=True)
    assert (await check_target(url, allowed)).startswith("http://")


@pytest.mark.parametrize(
    ("url", "normalised"),
    [
        ("HTTPS://93.184.215.14:443/hook?a=1#frag", "https://93.184.215.14/hook?a=1"),
        ("http://93.184.215.14:8080/x", "http://93.184.215.14:8080/x"),
        ("https://[2606:4700:4700::1111]/hook", "https://[2606:4700:4700::1111]/hook"),
        ("http://[::ffff:8.8.8.8]/", "http://[::ffff:8.8.8.8]/"),
    ],
)
async def test_a_public_target_is_accepted_and_normalised(url: str, normalised: str) -> None:
    assert await check_target(url, STRICT) == normalised


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://93.184.215.14/hook", "https:// or http://"),
        ("93.184.215.14/hook", "https:// or http://"),
        ("http:///hook", "no host"),
        ("https://user:pw@93.184.215.14/hook", "user name or password"),
        ("https://93.184.215.14/" + "a" * 2048, "longer than 2048"),
        ("https://93.184.215.14:0/", "port"),
        ("https://93.184.215.14:70000/", "port"),
        ("http://exa mple.invalid/", "does not resolve"),
        ("https://nothing-here.invalid/hook", "does not resolve"),
    ],
)
async def test_a_malformed_target_is_refused(url: str, why: str) -> None:
    with pytest.raises(WebhookRefused, match=why):
        await check_target(url, STRICT)


async def test_without_a_secret_no_webhook_is_accepted() -> None:
    with pytest.raises(WebhookRefused, match="webhooks are not enabled on this server"):
        await check_target("https://93.184.215.14/hook", WebhookSettings())


def test_public_means_on_the_internet() -> None:
    import ipaddress

    assert is_public(ipaddress.ip_address("8.8.8.8"))
    assert is_public(ipaddress.ip_address("2001:4860:4860::8888"))
    assert not is_public(ipaddress.ip_address("::ffff:10.0.0.1"))
    assert not is_public(ipaddress.ip_address("fec0::1"))  # site-local


# --- the signature and the schedule ----------------------------------------------------


def test_the_signature_verifies_with_standardwebhooks() -> None:
    body = '{"id":"job-1","status":"succeeded","story":"ที่ทะเล"}'.encode()
    headers = signed_headers(SECRET_BYTES, "msg_job-1", int(time.time()), body)
    assert headers["content-type"] == "application/json"
    assert headers["webhook-signature"].startswith("v1,")
    assert standardwebhooks.Webhook(SECRET).verify(body, headers)["status"] == "succeeded"
    tampered = body.replace(b"succeeded", b"failed")
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(SECRET).verify(tampered, headers)


def test_retries_back_off_exponentially_within_bounds() -> None:
    settings = WebhookSettings(first_backoff=5.0, max_backoff=3600.0)
    delays = [retry_delay(settings, tries, None) for tries in range(1, 10)]
    for tries, delay in enumerate(delays, start=1):
        expected = min(5.0 * 4 ** (tries - 1), 3600.0)
        assert 0.8 * expected <= delay <= 1.2 * expected
    # Retry-After is honoured, within the same bounds.
    assert retry_delay(settings, 1, 120.0) == 120.0
    assert retry_delay(settings, 1, 0.0) == 5.0
    assert retry_delay(settings, 1, 86400.0) == 3600.0


def test_retry_after_is_seconds_or_an_http_date() -> None:
    now = time.time()
    assert parse_retry_after("30", now) == 30.0
    http_date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now + 60))
    later = parse_retry_after(http_date, now)
    assert later is not None and 58 <= later <= 61
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


# --- delivery --------------------------------------------------------------------------


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as state:
        yield state


@pytest.fixture
async def store(job_store: JobStore) -> JobStore:
    """The jobs' store with the webhooks' queue beside it."""
    await open_deliveries(job_store.js, job_store.config)
    return job_store


def render(record: JobRecord) -> bytes:
    """A stand-in for the API's job JSON."""
    return f'{{"id":"{record.id}","status":"{record.status.value}"}}'.encode()


async def _ended(store: JobStore, url: str, job_id: str = "job-1") -> None:
    """A job that succeeded, with a webhook, and its delivery requested."""
    now = time.time()
    record = JobRecord(
        id=job_id,
        status=JobStatus.SUCCEEDED,
        created_at=now,
        expires_at=now + 3600,
        finished_at=now,
        kind=MediaKind.IMAGE,
        uploads=[JobUpload(name="u", size=3)],
        result=b'{"english":"Once"}',
        webhook_url=url,
    )
    await store.create(record)
    assert await request_delivery(store, job_id)


async def _until(store: JobStore, job_id: str, *states: WebhookStatus) -> Versioned:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        current = await store.get(job_id)
        if current.record.webhook is not None and current.record.webhook.status in states:
            return current
        await asyncio.sleep(0.02)
    raise AssertionError(f"job {job_id}'s webhook never reached {states}: {current.record}")


async def _sent(
    store: JobStore, settings: WebhookSettings, job_id: str, *states: WebhookStatus
) -> Versioned:
    senders = Senders(store, settings, render)
    await senders.start()
    try:
        done = await _until(store, job_id, *states)
        await asyncio.sleep(0.3)  # no try after the end
    finally:
        await senders.close()
    return done


async def test_a_receiver_failing_twice_gets_one_delivery_with_one_id(
    store: JobStore, receiver: Receiver
) -> None:
    receiver.answers = [(500, {}), (500, {}), (200, {})]
    await _ended(store, receiver.url)
    done = await _sent(store, FAST, "job-1", WebhookStatus.DELIVERED)

    assert len(receiver.seen) == 3
    ids = {headers["webhook-id"] for _, headers, _ in receiver.seen}
    assert ids == {"msg_job-1"}
    for path, headers, body in receiver.seen:
        assert path == "/hook"
        assert headers["content-type"] == "application/json"
        assert standardwebhooks.Webhook(SECRET).verify(body, headers) == {
            "id": "job-1",
            "status": "succeeded",
        }
    webhook = done.record.webhook
    assert webhook is not None
    assert (webhook.id, webhook.attempts, webhook.last_status) == ("msg_job-1", 3, 200)
    assert webhook.last_error is None and webhook.delivered_at is not None
    # Only the webhook changed on the job.
    assert (done.record.status, done.record.result) == (JobStatus.SUCCEEDED, b'{"english":"Once"}')
    assert await queued_deliveries(store.js) == 0


async def test_a_gone_receiver_fails_the_webhook_after_one_try(
    store: JobStore, receiver: Receiver
) -> None:
    receiver.answers = [(410, {})]
    await _ended(store, receiver.url)
    done = await _sent(store, FAST, "job-1", WebhookStatus.FAILED)
    assert len(receiver.seen) == 1
    webhook = done.record.webhook
    assert webhook is not None
    assert (webhook.attempts, webhook.last_status) == (1, 410)
    assert webhook.last_error == "the receiver answered 410"
    assert await queued_deliveries(store.js) == 0


async def test_tries_stop_when_the_retry_bound_is_passed(
    store: JobStore, receiver: Receiver
) -> None:
    receiver.answers = [(503, {})]
    await _ended(store, receiver.url)
    settings = dataclasses.replace(FAST, retry_for=0.5, first_backoff=0.05, max_backoff=0.05)
    started = time.monotonic()
    done = await _sent(store, settings, "job-1", WebhookStatus.FAILED)
    assert time.monotonic() - started >= 0.5
    webhook = done.record.webhook
    assert webhook is not None
    assert webhook.attempts == len(receiver.seen) >= 3
    assert webhook.last_status == 503
    assert webhook.last_error == "the receiver answered 503; no more tries after 0.5 s"
    assert await queued_deliveries(store.js) == 0


async def test_a_redirect_is_not_followed_but_tried_again(
    store: JobStore, receiver: Receiver
) -> None:
    receiver.answers = [(307, {"location": "http://127.0.0.1:1/elsewhere"}), (204, {})]
    await _ended(store, receiver.url)
    done = await _sent(store, FAST, "job-1", WebhookStatus.DELIVERED)
    assert [path for path, _, _ in receiver.seen] == ["/hook", "/hook"]
    assert done.record.webhook is not None and done.record.webhook.last_status == 204


async def test_a_host_name_is_called_at_its_checked_address_under_its_name(
    store: JobStore, receiver: Receiver
) -> None:
    await _ended(store, receiver.url.replace("127.0.0.1", "localhost"))
    await _sent(store, FAST, "job-1", WebhookStatus.DELIVERED)
    [(_, headers, _)] = receiver.seen
    assert headers["host"] == receiver.url.split("/")[2].replace("127.0.0.1", "localhost")


async def test_a_receiver_too_slow_to_answer_is_tried_again(
    store: JobStore, receiver: Receiver
) -> None:
    receiver.answers = [(200, {"x-delay": "1.0"}), (204, {})]
    await _ended(store, receiver.url)
    slow = dataclasses.replace(FAST, timeout=0.3)
    done = await _sent(store, slow, "job-1", WebhookStatus.DELIVERED)
    webhook = done.record.webhook
    assert webhook is not None
    assert (webhook.attempts, webhook.last_status) == (2, 204)


async def test_an_unreachable_receiver_is_tried_again(store: JobStore) -> None:
    await _ended(store, "http://127.0.0.1:1/hook")  # nothing listens on port 1
    senders = Senders(store, FAST, render)
    await senders.start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            webhook = (await store.get("job-1")).record.webhook
            if webhook is not None and webhook.attempts >= 2:
                break
            await asyncio.sleep(0.02)
    finally:
        await senders.close()
    assert webhook is not None
    assert webhook.status is WebhookStatus.PENDING
    assert webhook.last_error == "could not connect to the receiver"


async def test_a_target_turned_private_is_refused_before_the_try(
    store: JobStore, receiver: Receiver
) -> None:
    await _ended(store, receiver.url)
    strict = dataclasses.replace(FAST, allow_private=False)
    done = await _sent(store, strict, "job-1", WebhookStatus.FAILED)
    assert receiver.seen == []
    webhook = done.record.webhook
    assert webhook is not None and webhook.last_status is None
    assert webhook.last_error is not None and "not a public address" in webhook.last_error


async def test_a_deleted_job_drops_its_delivery(
    job_nc: Client, store: JobStore, receiver: Receiver
) -> None:
    await _ended(store, receiver.url)
    await store.delete("job-1")
    senders = Senders(store, FAST, render)
    await senders.start()
    try:
        deadline = time.monotonic() + 10
        while await queued_deliveries(store.js) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
    finally:
        await senders.close()
    assert receiver.seen == []
    info = await job_nc.jetstream().stream_info(WEBHOOKS_STREAM)
    assert info.state.messages == 0


async def test_a_delivery_is_requested_once_and_only_for_a_webhook(
    job_nc: Client, store: JobStore, receiver: Receiver
) -> None:
    await _ended(store, receiver.url)
    assert await request_delivery(store, "job-1")  # the same job again: dropped by the queue
    consumer = await job_nc.jetstream().consumer_info(WEBHOOKS_STREAM, WEBHOOKS_SENDERS)
    assert consumer.num_pending == 1
    record = (await store.get("job-1")).record
    assert record.webhook is not None and record.webhook.id == "msg_job-1"
    assert pending_webhook(record) == record.webhook

    await _ended(store, receiver.url, "job-2")
    done = await _sent(store, FAST, "job-2", WebhookStatus.DELIVERED)
    assert not await request_delivery(store, "job-2")  # delivered already
    assert done.record.webhook is not None

    now = time.time()
    plain = JobRecord(
        id="job-3",
        status=JobStatus.CANCELED,
        created_at=now,
        expires_at=now + 60,
        kind=MediaKind.IMAGE,
        uploads=[],
    )
    await store.create(plain)
    assert not await request_delivery(store, "job-3")
    assert pending_webhook(plain) is None


async def test_senders_of_two_replicas_deliver_once(store: JobStore, receiver: Receiver) -> None:
    receiver.answers = [(204, {})]
    for n in range(6):
        await _ended(store, receiver.url, f"job-{n}")
    first, second = Senders(store, FAST, render), Senders(store, FAST, render)
    await first.start()
    await second.start()
    try:
        for n in range(6):
            await _until(store, f"job-{n}", WebhookStatus.DELIVERED)
        await asyncio.sleep(0.3)
    finally:
        await first.close()
        await second.close()
    assert sorted(headers["webhook-id"] for _, headers, _ in receiver.seen) == [
        f"msg_job-{n}" for n in range(6)
    ]
