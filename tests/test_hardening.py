"""Security headers on every answer; CORS only for the origins the operator names."""

from __future__ import annotations

from dataclasses import replace

import httpx
import pytest

from bus.settings import SettingsError
from gateway import config as gateway_config
from gateway.hardening import STRICT_POLICY, SWAGGER_POLICY
from tests.media import sample_photo

pytestmark = pytest.mark.usefixtures("blob_store")


def assert_hardened(response: httpx.Response, policy: str = STRICT_POLICY) -> None:
    assert response.headers["content-security-policy"] == policy
    assert "frame-ancestors 'none'" in policy
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["x-frame-options"] == "DENY"


async def test_every_kind_of_answer_carries_the_security_headers(gateway, openai):
    photo = sample_photo("coffee.png")
    async with gateway() as client:
        answers = [
            await client.get("/"),
            await client.get("/api/docs"),
            await client.get("/static/app.js"),
            await client.get("/healthz"),
            await client.get("/readyz"),
            await client.get("/metrics"),
            await client.get("/schema/openapi.json"),
            await client.get("/no/such/page"),
            await client.post("/analyze/", files=[("files", ("a.txt", b"hello", "text/plain"))]),
            await client.post(
                "/analyze/stream", files=[("files", (photo.name, photo.read_bytes(), "image/png"))]
            ),
        ]
    assert [a.status_code for a in answers] == [200, 200, 200, 200, 200, 200, 200, 404, 400, 200]
    for answer in answers:
        assert_hardened(answer)
    # The page itself loads only its own module script, which the policy allows.
    assert '<script type="module" src="/static/app.js">' in answers[0].text
    assert "<script>" not in answers[0].text and " style=" not in answers[0].text


async def test_swagger_ui_gets_a_policy_for_its_cdn_bundle_and_is_never_framed(gateway):
    async with gateway() as client:
        page = await client.get("/schema/swagger")
    assert page.status_code == 200
    assert_hardened(page, SWAGGER_POLICY)
    assert "https://cdn.jsdelivr.net/" in page.text


PREFLIGHT = {
    "Origin": "https://stories.example",
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization",
}


async def test_cors_is_off_by_default(gateway):
    async with gateway() as client:
        preflight = await client.options("/analyze/", headers=PREFLIGHT)
        simple = await client.get("/healthz", headers={"Origin": PREFLIGHT["Origin"]})
    assert "access-control-allow-origin" not in preflight.headers
    assert "access-control-allow-origin" not in simple.headers


async def test_cors_allows_the_named_origins_only(gateway, gateway_settings):
    settings = replace(gateway_settings, cors_origins=("https://stories.example",))
    async with gateway(settings) as client:
        allowed = await client.options("/analyze/", headers=PREFLIGHT)
        other = await client.options(
            "/analyze/", headers={**PREFLIGHT, "Origin": "https://evil.example"}
        )
        simple = await client.get("/healthz", headers={"Origin": PREFLIGHT["Origin"]})
    assert allowed.status_code == 204
    assert allowed.headers["access-control-allow-origin"] == "https://stories.example"
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    assert other.headers.get("access-control-allow-origin") != "https://evil.example"
    assert simple.headers["access-control-allow-origin"] == "https://stories.example"
    assert "x-request-id" in simple.headers["access-control-expose-headers"].lower()


def test_cors_origins_are_read_and_checked():
    settings = gateway_config.load(
        {"IMGSTORY_CORS_ORIGINS": "https://a.example/, http://localhost:5173"}
    )
    assert settings.cors_origins == ("https://a.example", "http://localhost:5173")
    with pytest.raises(SettingsError, match="IMGSTORY_CORS_ORIGINS"):
        gateway_config.load({"IMGSTORY_CORS_ORIGINS": "a.example"})
