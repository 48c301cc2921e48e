"""A three-node NATS cluster with JetStream on loopback, for tests that lose a node."""

from __future__ import annotations

import asyncio
import collections
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import nats
from nats.errors import Error as NatsError
from nats.js.api import StorageType, StreamConfig

from devstack.nats_server import nats_server_binary
from devstack.processes import ProcessGroup, free_port

CLUSTER_NAME = "imgstory-test"


@dataclass
class ClusterNode:
    """One nats-server of the cluster: its name, ports, store and process."""

    name: str
    port: int
    cluster_port: int
    store_dir: Path
    config: Path
    process: subprocess.Popen[str] | None = None
    # The last lines of its log, kept to explain a failure.
    log: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=200))

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


class NatsCluster:
    """Three nats-servers on loopback, routed to each other, JetStream clustered.

    ``start()`` starts them and waits until each listens; ``await ready()`` waits until
    JetStream has a meta leader and answers API requests. Each node has its own client
    port, cluster port, store and config file under ``root``.
    """

    def __init__(self, root: Path, size: int = 3) -> None:
        self.nodes: list[ClusterNode] = []
        self.group = ProcessGroup(grace=10)
        for index in range(1, size + 1):
            name = f"n{index}"
            folder = root / name
            folder.mkdir(parents=True, exist_ok=True)
            self.nodes.append(
                ClusterNode(
                    name=name,
                    port=free_port(),
                    cluster_port=free_port(),
                    store_dir=folder / "jetstream",
                    config=folder / "nats.conf",
                )
            )

    def node(self, name: str) -> ClusterNode:
        """The node whose ``server_name`` is ``name``; raises KeyError for none."""
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def seeds(self, first: ClusterNode | None = None) -> str:
        """Every node's URL, comma-separated as NATS_URL takes them; ``first`` leading."""
        ordered = sorted(self.nodes, key=lambda node: node is not first)
        return ",".join(node.url for node in ordered)

    def start(self, timeout: float = 10) -> NatsCluster:
        """Start every node and wait until each listens; raises RuntimeError if one does not."""
        routes = ", ".join(f'"nats-route://127.0.0.1:{n.cluster_port}"' for n in self.nodes)
        for node in self.nodes:
            node.config.write_text(
                f'server_name: "{node.name}"\n'
                f'listen: "127.0.0.1:{node.port}"\n'
                f'jetstream {{ store_dir: "{node.store_dir}" }}\n'
                "cluster {\n"
                f'  name: "{CLUSTER_NAME}"\n'
                f'  listen: "127.0.0.1:{node.cluster_port}"\n'
                f"  routes: [{routes}]\n"
                "}\n"
            )
            node.process = self.group.start(
                node.name,
                [nats_server_binary(), "-c", str(node.config)],
                stderr=subprocess.PIPE,
                text=True,
            )
            threading.Thread(target=self._drain, args=(node,), daemon=True).start()
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            while not any("Listening for client connections" in line for line in node.log):
                if not node.alive or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"nats-server {node.name} did not start: {list(node.log)}")
                time.sleep(0.02)
        return self

    @staticmethod
    def _drain(node: ClusterNode) -> None:
        # Read its log for ever, so the pipe never fills and blocks the server.
        assert node.process is not None and node.process.stderr is not None
        for line in node.process.stderr:
            node.log.append(line.rstrip())

    async def ready(self, timeout: float = 15) -> None:
        """Return once a stream can be placed on every live node; fails after ``timeout`` s.

        A clustered JetStream answers API requests only once its nodes have elected a
        meta leader, and places a replicated stream only once that leader knows enough
        peers: until then a request times out or is refused. A throwaway stream with a
        replica on each live node proves both.
        """
        live = [node for node in self.nodes if node.alive]
        probe = "CLUSTER_READY"
        config = StreamConfig(
            name=probe,
            subjects=["cluster.ready"],
            storage=StorageType.MEMORY,
            num_replicas=len(live),
        )
        deadline = time.monotonic() + timeout
        servers = [node.url for node in live]
        client = await nats.connect(servers, connect_timeout=2, max_reconnect_attempts=-1)
        try:
            js = client.jetstream(timeout=0.5)
            while True:
                try:
                    await js.add_stream(config)
                    await js.delete_stream(probe)
                    return
                except (NatsError, TimeoutError) as err:
                    if time.monotonic() > deadline:
                        raise RuntimeError(
                            f"JetStream cannot place a stream on {len(live)} nodes "
                            f"within {timeout} s: {err!r}"
                        ) from err
                    await asyncio.sleep(0.1)
        finally:
            await client.close()

    async def lead(self, streams: list[str], node: ClusterNode, timeout: float = 20) -> None:
        """Move each stream's leadership to ``node`` (fails after ``timeout`` s).

        JetStream does not let a client name the next leader: a leader asked to step
        down hands over to a peer of its choosing, so it is asked again until the
        leader is ``node`` (about two tries each with three nodes).
        """
        deadline = time.monotonic() + timeout
        client = await nats.connect(node.url, connect_timeout=2)
        try:
            js = client.jetstream(timeout=1)
            for stream in streams:
                while True:
                    try:
                        info = await js.stream_info(stream)
                        leader = info.cluster.leader if info.cluster else None
                        if leader == node.name:
                            break
                        if leader is not None:
                            await client.request(
                                f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}", b"", timeout=1
                            )
                    except (NatsError, TimeoutError):
                        pass  # electing: ask again
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{stream} is not led by {node.name} in {timeout} s")
                    await asyncio.sleep(0.2)
        finally:
            await client.close()

    def kill(self, node: ClusterNode) -> None:
        """SIGKILL ``node``: no goodbye to its clients or its peers, as a lost machine."""
        self.group.kill(node.name)

    def stop(self) -> None:
        """Stop every node still running (SIGTERM, then SIGKILL after 10 s)."""
        self.group.stop()
