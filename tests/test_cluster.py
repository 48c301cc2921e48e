"""Beyond one machine: the parts spread over a three-node NATS cluster, the blob bucket kept
on all three, and the node leading the bucket's stream killed under load. Each test bounds
its own time and checks that the bucket and the upload directory end empty."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import pytest
from nats.errors import Error as NatsError

from bus import blobs, connection
from bus.blobs import Bucket
from bus.server import Server
from contracts.subjects import BLOB_BUCKET, JOB_EVENTS_STREAM, JOBS_BUCKET, JOBS_STREAM
from devstack.fake_answers import Delay
from devstack.fake_openai import FakeOpenAI
from devstack.faults import eventually, photo_upload
from devstack.gateway import gateway_client
from devstack.nats_cluster import ClusterNode, NatsCluster
from devstack.services import fake_model_settings, services_on_fake
from gateway import config as gateway_config
from story_service import config as story_config
from story_service.service import start_service as start_story

log = logging.getLogger(__name__)

REPLICATED = Bucket(replicas=3)
STREAM = f"OBJ_{BLOB_BUCKET}"
JOB_STREAMS = [JOBS_STREAM, f"KV_{JOBS_BUCKET}", JOB_EVENTS_STREAM]
PROVIDER_DELAY = 1.5  # seconds the fake provider takes over each story and translation
# The parts that can share a node with the bucket's leader: each gets a node of its own.
PARTS = ("gateway", "story", "frames")


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[NatsCluster]:
    nodes = NatsCluster(tmp_path / "nats").start()
    try:
        await nodes.ready(timeout=15)
        yield nodes
    finally:
        nodes.stop()


@dataclass
class Spread:
    """The running parts: the gateway's HTTP client, the bucket's leader and a survivor."""

    client: httpx.AsyncClient
    leader: ClusterNode
    survivor: ClusterNode


@asynccontextmanager
async def spread_over(
    cluster: NatsCluster, fake: FakeOpenAI, upload_dir: Path, beside_the_leader: str
) -> AsyncIterator[Spread]:
    """The gateway, the story service and frames+translation, each on its own node.

    The bucket is made first with three replicas; ``beside_the_leader`` names the part
    that shares the node leading its stream. Each part is given its node's URL alone:
    nats-py shuffles a seed list, so only a single URL says where a part first
    connects, and the cluster then tells it the other nodes to reconnect to.
    """
    leader = await asyncio.wait_for(bucket_leader(cluster), 15)
    others = [node for node in cluster.nodes if node is not leader]
    placed = dict(zip([p for p in PARTS if p != beside_the_leader], others, strict=True))
    placed[beside_the_leader] = leader
    gateway_settings = replace(
        gateway_config.load({}),
        nats_url=placed["gateway"].url,
        upload_dir=str(upload_dir),
        bucket=REPLICATED,
    )
    async with services_on_fake(
        placed["frames"].url, fake, story=False, perception=False, model_timeout=30
    ) as servers:
        async with story_on(placed["story"].url, fake) as story:
            servers = {**servers, "story": story}
            for name, server in servers.items():
                part = "story" if name == "story" else "frames"
                assert server.nc.connected_url is not None
                assert server.nc.connected_url.port == placed[part].port, name
            async with gateway_client(gateway_settings) as client:
                yield Spread(client, leader, others[0])


async def bucket_leader(cluster: NatsCluster) -> ClusterNode:
    """Make the bucket with three replicas; return the node leading its stream."""
    client = await connection.connect(cluster.seeds(), "test-bucket")
    try:
        js = client.jetstream(timeout=5)
        await blobs.open_bucket(js, REPLICATED)
        info = await js.stream_info(STREAM)
        assert info.config.num_replicas == 3
        assert info.cluster is not None and info.cluster.leader is not None
        return cluster.node(info.cluster.leader)
    finally:
        await client.close()


@asynccontextmanager
async def story_on(url: str, fake: FakeOpenAI) -> AsyncIterator[Server]:
    """The story service alone on its own connection to ``url``: a slow provider's patience."""
    model = replace(fake_model_settings(fake, "fake-story"), timeout=30, max_retries=0)
    settings = replace(story_config.load({}), nats_url=url, model=model, bucket=REPLICATED)
    client = await connection.connect(url, "test-story")
    try:
        server = await start_story(client, settings)
        try:
            yield server
        finally:
            await server.stop()
    finally:
        await client.close()


async def post_photo(client: httpx.AsyncClient) -> tuple[httpx.Response, float]:
    """One photo request: its response and when it came (monotonic seconds)."""
    response = await client.post("/analyze/", files=photo_upload())
    return response, time.monotonic()


async def bucket_is_empty(url: str) -> bool:
    """Whether the bucket holds no live object; False while its stream cannot answer."""
    client = await connection.connect(url, "test-bucket")
    try:
        store = await blobs.open_bucket(blobs.jetstream(client))
        return await blobs.list_names(store) == []
    except (NatsError, TimeoutError, blobs.BlobsUnavailable):
        return False  # still electing a leader: ask again
    finally:
        await client.close()


@pytest.mark.parametrize(
    "beside_the_leader",
    [
        # The gateway loses its node and the bucket its leader at once: the edit loop's case.
        "gateway",
        # A story replica, or frames+translation, reconnect mid-call instead.
        pytest.param("story", marks=pytest.mark.slow),
        pytest.param("frames", marks=pytest.mark.slow),
    ],
)
async def test_requests_in_flight_survive_the_loss_of_the_node_leading_the_bucket(
    cluster: NatsCluster, fake: FakeOpenAI, upload_dir: Path, beside_the_leader: str
) -> None:
    count = 8
    fake.script(*[Delay(PROVIDER_DELAY)] * (2 * count))  # a story and a translation each
    async with spread_over(cluster, fake, upload_dir, beside_the_leader) as spread:
        await cluster.lead(JOB_STREAMS, spread.leader)  # the jobs lose their leaders too
        sent = asyncio.gather(*(post_photo(spread.client) for _ in range(count)))
        # Every request has stored its photo and frames and waits on the provider...
        await eventually(lambda: _at_least(fake, count), timeout=20)
        # ...when the node leading the bucket (and holding one part's connection) dies.
        killed_at = time.monotonic()
        cluster.kill(spread.leader)
        await all_answer(sent, killed_at, spread, upload_dir, within=15)


@pytest.mark.slow
async def test_requests_that_store_while_the_bucket_elects_a_leader_still_answer(
    cluster: NatsCluster, fake: FakeOpenAI, upload_dir: Path
) -> None:
    count = 4
    async with spread_over(cluster, fake, upload_dir, "story") as spread:
        # The jobs' queue, records and events are led from the same node, so that every
        # stream a submission writes to is leaderless at once (CI once found the queue's
        # admission count asked only once, and answered 503).
        await cluster.lead(JOB_STREAMS, spread.leader)
        # The gateway and frames+translation keep their nodes; only the streams are leaderless.
        killed_at = time.monotonic()
        cluster.kill(spread.leader)
        sent = asyncio.gather(*(post_photo(spread.client) for _ in range(count)))
        # Blob operations are sent again until the stream has its new leader (5-8 s).
        await all_answer(sent, killed_at, spread, upload_dir, within=30)


async def all_answer(
    sent: Awaitable[list[tuple[httpx.Response, float]]],
    killed_at: float,
    spread: Spread,
    upload_dir: Path,
    within: float,
) -> None:
    """Every request answers 200 within ``within`` seconds of the kill, leaving nothing."""
    answers = await asyncio.wait_for(sent, 60)
    answered_in = max(at for _, at in answers) - killed_at
    await eventually(lambda: bucket_is_empty(spread.survivor.url), timeout=20)
    log.info("%d answers within %.1f s of the kill", len(answers), answered_in)
    assert [r.status_code for r, _ in answers] == [200] * len(answers), [r.text for r, _ in answers]
    assert answered_in < within, answered_in
    assert list(upload_dir.iterdir()) == []


async def _at_least(fake: FakeOpenAI, count: int) -> bool:
    return len(fake.requests) >= count
