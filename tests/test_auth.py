"""API keys: the analysis routes need one when IMGSTORY_API_KEYS is set; nothing else does."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import replace
from pathlib import Path

import pytest

from bus.settings import SettingsError
from gateway import config as gateway_config
from gateway.auth import ApiKeys, presented_keys
from tests.media import sample_photo

pytestmark = pytest.mark.usefixtures("blob_store")

KEY = "k3y-for-alice-0123456789"
HASHED_KEY = "k3y-for-bob-kept-as-a-hash"
FILE_KEY = "k3y-from-a-file-9876543210"
ANALYSIS_PATHS = ["/analyze/", "/analyze", "/analyze/stream", "/analyze/stream/"]


def sha256_entry(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def photo() -> list[tuple[str, tuple[str, bytes, str]]]:
    path = sample_photo("coffee.png")
    return [("files", (path.name, path.read_bytes(), "image/png"))]


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    path = tmp_path / "api-keys"
    path.write_text(f"# keys for the tests\n\n{FILE_KEY}\n{sha256_entry('unused')}\n")
    return path


@pytest.fixture
def keyed_settings(gateway_settings, keys_file) -> gateway_config.Settings:
    """Keys on: one in clear and one as its sha256, read from the environment's syntax."""
    loaded = gateway_config.load({"IMGSTORY_API_KEYS": f"{KEY}, {sha256_entry(HASHED_KEY)}"})
    return replace(gateway_settings, admission=loaded.admission)


def test_entries_in_clear_hashed_and_from_a_file(keys_file):
    keys = gateway_config.load({"IMGSTORY_API_KEYS": f" {KEY} ,{sha256_entry(HASHED_KEY)},"})
    ring = keys.admission.api_keys
    assert ring.identify(KEY) and ring.identify(HASHED_KEY)
    assert ring.identify(KEY) != ring.identify(HASHED_KEY)
    assert ring.identify("nope") is None and ring.identify(KEY + "x") is None
    assert KEY not in repr(keys)
    from_file = gateway_config.load({"IMGSTORY_API_KEYS": f"@{keys_file}"}).admission.api_keys
    assert from_file.identify(FILE_KEY) and not from_file.identify(KEY)
    assert len(from_file.digests) == 2  # the comment and the blank line are no keys
    assert not gateway_config.load({}).admission.api_keys
    assert not gateway_config.load({"IMGSTORY_API_KEYS": "  "}).admission.api_keys


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (f"{KEY},sha256:abc", "entry 2 is not sha256"),
        (",, ,", "names no key"),
        ("@/nonexistent/keys", "cannot read /nonexistent/keys"),
    ],
)
def test_unusable_keys_stop_the_gateway_without_quoting_them(value, words):
    with pytest.raises(SettingsError) as caught:
        gateway_config.load({"IMGSTORY_API_KEYS": value})
    assert "IMGSTORY_API_KEYS" in str(caught.value) and words in str(caught.value)
    assert KEY not in str(caught.value)


def test_both_header_styles_offer_a_key():
    assert presented_keys({"authorization": f"Bearer {KEY}"}) == [KEY]
    assert presented_keys({"authorization": f"bearer  {KEY} "}) == [KEY]
    assert presented_keys({"x-api-key": KEY}) == [KEY]
    assert presented_keys({"authorization": "Basic dXNlcjpwdw==", "x-api-key": KEY}) == [KEY]
    assert presented_keys({"authorization": "Bearer"}) == []


@pytest.mark.parametrize("path", ANALYSIS_PATHS)
async def test_a_missing_key_is_401_before_the_upload_is_read(
    gateway, keyed_settings, openai, upload_dir, path
):
    async with gateway(keyed_settings) as client:
        response = await client.post(path, files=photo(), headers={"X-Request-ID": "no-key-1"})
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json() == {"detail": response.json()["detail"], "request_id": "no-key-1"}
    assert "X-API-Key" in response.json()["detail"]
    assert response.headers["x-request-id"] == "no-key-1"
    assert openai.requests == [] and list(upload_dir.iterdir()) == []


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer not-the-key"},
        {"X-API-Key": "not-the-key"},
        {"Authorization": f"Basic {KEY}"},
        {"Authorization": f"Bearer {sha256_entry(KEY)}"},  # the hash is not the key
    ],
    ids=["bearer", "x-api-key", "other-scheme", "the-hash-itself"],
)
async def test_a_wrong_key_is_401(gateway, keyed_settings, openai, headers):
    async with gateway(keyed_settings) as client:
        response = await client.post("/analyze/", files=photo(), headers=headers)
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert set(response.json()) == {"detail", "request_id"}
    assert openai.requests == []


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": f"Bearer {KEY}"},
        {"X-API-Key": HASHED_KEY},
        {"Authorization": "Basic dXNlcjpwdw==", "X-API-Key": KEY},
    ],
    ids=["bearer", "x-api-key-of-a-hashed-entry", "x-api-key-beside-other-auth"],
)
async def test_an_accepted_key_gets_the_story(gateway, keyed_settings, openai, headers):
    async with gateway(keyed_settings) as client:
        response = await client.post("/analyze/", files=photo(), headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["english"]


async def test_a_key_from_the_file_opens_the_stream(gateway, gateway_settings, openai, keys_file):
    admission = gateway_config.load({"IMGSTORY_API_KEYS": f"@{keys_file}"}).admission
    async with gateway(replace(gateway_settings, admission=admission)) as client:
        refused = await client.post("/analyze/stream", files=photo())
        response = await client.post(
            "/analyze/stream", files=photo(), headers={"Authorization": f"Bearer {FILE_KEY}"}
        )
    assert refused.status_code == 401
    assert response.status_code == 200
    assert "event: result" in response.text


async def test_page_docs_schema_and_probes_stay_open(gateway, keyed_settings):
    async with gateway(keyed_settings) as client:
        page = await client.get("/")
        for path in ["/api/docs", "/schema", "/schema/openapi.json", "/healthz", "/readyz"]:
            response = await client.get(path)
            assert response.status_code == 200, (path, response.status_code)
        assert (await client.get("/static/app.js")).status_code == 200
        assert (await client.get("/metrics")).status_code != 401
    assert page.status_code == 200
    # The page knows to ask for a key before it sends anything.
    assert 'data-api-key="required"' in page.text


async def test_without_keys_nothing_is_asked_and_any_header_is_ignored(gateway, openai):
    async with gateway() as client:
        page = await client.get("/")
        response = await client.post(
            "/analyze/", files=photo(), headers={"Authorization": "Bearer whatever"}
        )
    assert 'data-api-key="off"' in page.text
    assert response.status_code == 200, response.text


async def test_keys_never_reach_the_logs(gateway, keyed_settings, openai, caplog):
    caplog.set_level(logging.DEBUG)
    async with gateway(keyed_settings) as client:
        await client.post("/analyze/", files=photo(), headers={"X-API-Key": "wrong-" + KEY})
        await client.post("/analyze/", files=photo(), headers={"Authorization": f"Bearer {KEY}"})
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "refused (401)" in logged
    assert KEY not in logged


def test_a_key_is_known_by_its_digest_whichever_entry_it_matches():
    keys = ApiKeys.parse(["a-first-key", "a-second-key", "a-third-key"])
    assert keys.identify("a-first-key") == hashlib.sha256(b"a-first-key").hexdigest()
    assert keys.identify("a-third-key") == hashlib.sha256(b"a-third-key").hexdigest()
