"""The web page and the docs page in a real Chromium, against `python -m gateway` and the real services.

Playwright's async API runs on the test event loop, next to the in-process services, so
nothing here blocks the loop. Screenshots go to test-artifacts/browser/.

The page submits each story as a job (POST /jobs), puts it in its address (`/#job=<id>`)
and follows GET /jobs/{id}/events; the job goes on when the page is closed.
"""

from __future__ import annotations

import asyncio
import html
import json
import re
import shlex
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from PIL import Image
from playwright.async_api import (
    Browser,
    ConsoleMessage,
    Page,
    Request,
    Route,
    async_playwright,
    expect,
)

from devstack.fake_answers import Delay, Reply, Status
from devstack.gateway import running_gateway
from devstack.processes import ROOT, free_port
from tests.media import (
    sample_photo,
    sample_video,
    write_garbage,
    write_other_image,
    write_video,
)
from tests.test_faithful import LAMP, LAMP_BLUE

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]
ARTIFACTS = ROOT / "test-artifacts" / "browser"
STATIC = ROOT / "gateway" / "static"
STAGE_ORDER = ["uploading", "extracting_frames", "transcribing", "writing_story", "translating"]
THAI = re.compile(r"[\u0e00-\u0e7f]{10}")
MIB = 1024 * 1024
JOB_ADDRESS = re.compile(r"/#job=(job_[0-9a-f]{32})$")

# Records, in the page, every stage that becomes the active one (with the text shown for it),
# whether the English story was on screen while the work was still going on, each state of
# the live English paragraphs, and each state of the live Thai column (with the English
# beside it) as it changes.
RECORDER = """
window.__stages = [];
window.__liveStory = "";
window.__liveParagraphs = [];
window.__englishBox = null;
window.__liveThai = [];
document.addEventListener("DOMContentLoaded", () => {
  const list = document.getElementById("stages");
  const live = document.getElementById("live-text");
  const thai = document.getElementById("live-thai");
  if (!list) return;
  const box = (el) => {
    const r = el.getBoundingClientRect();
    return {left: r.left, right: r.right, top: r.top + scrollY, width: r.width};
  };
  new MutationObserver((records) => {
    for (const record of records) {
      const item = record.target;
      if (!item.classList || !item.classList.contains("stage")) continue;
      const last = window.__stages[window.__stages.length - 1];
      if (item.classList.contains("is-active") && (!last || last.stage !== item.dataset.stage)) {
        window.__stages.push({stage: item.dataset.stage, text: item.innerText.replace(/\\s+/g, " ").trim()});
      }
    }
  }).observe(list, {subtree: true, attributes: true, attributeFilter: ["class"]});
  new MutationObserver(() => {
    if (!document.getElementById("progress").hidden && live.textContent) window.__liveStory = live.innerText;
    if (!window.__englishBox && live.textContent) window.__englishBox = box(live);
    window.__liveParagraphs.push([...live.children].map((p) => p.textContent));
  }).observe(live, {childList: true, characterData: true, subtree: true});
  new MutationObserver(() => {
    if (!thai.textContent.trim()) return;
    // textContent, not innerText: a callback may run after the result hid the card.
    window.__liveThai.push({
      paragraphs: [...thai.children].map((p) => p.textContent),
      english: live.textContent,
      resultShown: !document.getElementById("results").hidden,
      writing: Boolean(document.querySelector('.stage.is-active[data-stage="writing_story"]')),
      englishBox: box(live),
      thaiBox: box(thai),
    });
  }).observe(thai, {childList: true, characterData: true, subtree: true});
});
"""

# A story of a title and three paragraphs, streamed a word at a time in the Thai test.
SLOW_STORY = (
    "The Lantern Keeper\n\n"
    "Every evening old Somchai climbed the hill above the village and lit the lantern "
    "that guided the fishing boats home.\n\n"
    "One night the wind blew so hard that the flame died twice, and he shielded it "
    "with his coat until his hands were numb.\n\n"
    "At dawn the boats came in one by one, and the whole village walked up the hill "
    "to thank him."
)


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make test`, which installs Debian's chromium")
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        yield chromium
        await chromium.close()


@pytest.fixture(scope="module")
async def site(nats_url, services, tmp_path_factory) -> AsyncIterator[str]:
    """`python -m gateway` on a free port, over the session's NATS and services."""
    port = free_port()
    uploads = tmp_path_factory.mktemp("browser-uploads")
    async with running_gateway(nats_url, port, IMGSTORY_UPLOAD_DIR=str(uploads)):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(autouse=True)
def _no_job_left(no_job_left: None) -> None:
    """Each test's jobs are deleted after it (tests/support/fixtures.py)."""


@dataclass
class Tab:
    """A page plus what it sent and what went wrong in it."""

    page: Page
    base: str
    requests: list[Request] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def story_requests(self) -> list[Request]:
        """What was sent to write a story, or to follow one."""
        return [r for r in self.requests if "/analyze" in r.url or "/jobs" in r.url]

    def submissions(self) -> list[Request]:
        return [r for r in self.requests if r.method == "POST" and r.url.endswith("/jobs")]

    def event_requests(self) -> list[Request]:
        return [r for r in self.requests if is_events(r.url)]

    async def shot(self, name: str, full_page: bool = True) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        await self.page.screenshot(path=path, full_page=full_page)
        return path

    async def scroll_width(self) -> int:
        return await self.page.evaluate("document.documentElement.scrollWidth")


async def open_tab(
    browser: Browser, base: str, width: int = 1280, height: int = 900, path: str = "/"
) -> Tab:
    context = await browser.new_context(
        viewport={"width": width, "height": height}, accept_downloads=True, base_url=base
    )
    await context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
    page = await context.new_page()
    page.set_default_timeout(30_000)
    tab = Tab(page, base)
    page.on("request", lambda request: tab.requests.append(request))

    def on_console(message: ConsoleMessage) -> None:
        # A refused upload is logged by Chromium as a failed resource load; that is expected.
        if message.type == "error" and "Failed to load resource" not in message.text:
            tab.problems.append(message.text)

    page.on("console", on_console)
    page.on("pageerror", lambda error: tab.problems.append(str(error)))
    await page.add_init_script(RECORDER)
    await page.goto(path)
    return tab


@pytest.fixture
async def tabs(browser, site) -> AsyncIterator[list[Tab]]:
    """Open tabs; each must have made no request off the site and logged no script error."""
    opened: list[Tab] = []
    yield opened
    for tab in opened:
        outside = [
            r.url for r in tab.requests if not r.url.startswith((tab.base, "blob:", "data:"))
        ]
        assert outside == [], "the page fetched something from elsewhere"
        assert tab.problems == []
        await tab.page.context.close()


@pytest.fixture
def new_tab(browser, site, tabs):
    async def make(width: int = 1280, height: int = 900, path: str = "/") -> Tab:
        tab = await open_tab(browser, site, width, height, path)
        tabs.append(tab)
        return tab

    return make


def sse_events(body: str) -> list[tuple[str, dict]]:
    events = []
    for block in re.split(r"\r?\n\r?\n", body):
        name = re.search(r"^event: ?(.*)$", block, re.M)
        data = "\n".join(
            line[5:].lstrip() for line in block.splitlines() if line.startswith("data:")
        )
        if data:
            events.append((name.group(1).strip() if name else "message", json.loads(data)))
    return events


def sse_body(*events: tuple[str, dict], first_id: int) -> str:
    """Events as a job's stream sends them, numbered from `first_id`."""
    return "".join(
        f"id: {first_id + i}\nevent: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"
        for i, (name, data) in enumerate(events)
    )


def accepted_job(job_id: str) -> dict:
    """What POST /jobs answers, for a page whose job is played by the test."""
    base = f"/jobs/{job_id}"
    return {
        "id": job_id,
        "status": "queued",
        "stage": None,
        "created_at": "2030-01-01T00:00:00Z",
        "started_at": None,
        "finished_at": None,
        "expires_at": "2030-01-02T00:00:00Z",
        "attempts": 0,
        "result": None,
        "error": None,
        "urls": {"self": base, "events": f"{base}/events", "cancel": f"{base}/cancel"},
    }


def is_events(url: str) -> bool:
    return bool(re.search(r"/jobs/[^/]+/events$", url))


def is_submission(request: Request) -> bool:
    return request.method == "POST" and request.url.endswith("/jobs")


async def stream_response_events(tab: Tab, action) -> list[tuple[str, dict]]:
    """Run `action` (which submits the form) and return the events of the job it started."""
    async with tab.page.expect_response(lambda r: is_events(r.url), timeout=60_000) as info:
        await action()
    response = await info.value
    assert response.status == 200, await response.text()
    return sse_events(await response.text())


def job_id_of(page: Page) -> str:
    """The job the page's address names."""
    found = JOB_ADDRESS.search(page.url)
    assert found, page.url
    return found.group(1)


async def job_of(base: str, job_id: str) -> dict:
    async with httpx.AsyncClient(base_url=base) as client:
        answer = await client.get(f"/jobs/{job_id}")
    assert answer.status_code == 200, answer.text
    job: dict = answer.json()
    return job


async def until_ended(base: str, job_id: str, wait: float = 60) -> dict:
    deadline = asyncio.get_running_loop().time() + wait
    while (job := await job_of(base, job_id))["status"] not in {"succeeded", "failed", "canceled"}:
        assert asyncio.get_running_loop().time() < deadline, job
        await asyncio.sleep(0.2)
    return job


def paragraphs(text: str) -> list[str]:
    return [part.strip() for part in re.split(r"\n\s*\n", text.strip())]


def shown_in_order(states: list[list[str]], final: list[str]) -> None:
    """Each state of the live story was the final story's beginning: no text twice, none lost."""
    for shown in states:
        if not shown:
            continue
        assert len(shown) <= len(final), (shown, final)
        assert shown[:-1] == final[: len(shown) - 1], (shown, final)
        assert final[len(shown) - 1].startswith(shown[-1]), (shown, final)


async def story_boxes(page: Page) -> list[dict]:
    """Where the two stories are, measured in one go (the page may be scrolling)."""
    return await page.evaluate(
        """["english", "thai"].map(id => {
             const r = document.getElementById(id).getBoundingClientRect();
             return {left: r.left, right: r.right, top: r.top + scrollY, bottom: r.bottom + scrollY};
           })"""
    )


async def test_photo_gives_english_and_thai_stories_with_usage(new_tab, openai, blob_store):
    tab = await new_tab()
    page = tab.page
    await page.set_input_files("#files", sample_photo("rocket.jpg"))
    await expect(page.locator("#previews img")).to_have_count(1)
    await expect(page.locator("#selection-summary")).to_contain_text("1 photo selected")
    await page.get_by_role("button", name="Travel show").click()
    await expect(page.get_by_role("button", name="Travel show")).to_have_attribute(
        "aria-pressed", "true"
    )
    await tab.shot("photo-1-ready")

    events = await stream_response_events(
        tab, lambda: page.get_by_role("button", name="Write my story").click()
    )
    result = dict(events)["result"]
    await expect(page.locator("#results")).to_be_visible()

    english = page.locator("#english")
    thai = page.locator("#thai")
    await expect(english).to_contain_text("a story about 1 picture")
    assert THAI.search(await thai.inner_text())
    assert await thai.evaluate("el => el.closest('[lang]').lang") == "th"
    assert "Sarabun" in await thai.evaluate("el => getComputedStyle(el).fontFamily")
    thai_fonts = await page.evaluate(
        """document.fonts.ready.then(() => [...document.fonts]
             .filter(f => f.status === "loaded" && f.unicodeRange.includes("E01"))
             .map(f => f.family))"""
    )
    assert "Sarabun" in [f.strip("\"'") for f in thai_fonts], thai_fonts
    assert any("/static/fonts/sarabun-thai-" in r.url for r in tab.requests)

    usage = result["token_usage"]
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    await expect(page.locator("#usage")).to_contain_text(
        f"{usage['total_tokens']:,} tokens in total"
    )
    await expect(page.locator("#usage-rows tr")).to_have_count(3)
    # The preset's text reached the story model as the style prompt.
    assert "travel TV show" in openai.requests[0].text
    await tab.shot("photo-2-result")

    await page.locator("[data-copy=thai]").click()
    await expect(page.locator("[data-copy=thai]")).to_have_text("Copied ✓")
    assert await page.evaluate("navigator.clipboard.readText()") == result["thai"]

    async with page.expect_download() as info:
        await page.get_by_role("button", name="Download .md").click()
    download = await info.value
    assert download.suggested_filename.endswith(".md")
    markdown = Path(await download.path()).read_text(encoding="utf-8")
    assert "## English" in markdown and result["english"].strip() in markdown
    assert result["thai"].strip() in markdown and f"{usage['total_tokens']} total" in markdown

    async with page.expect_download() as info:
        await page.get_by_role("button", name="Download .txt").click()
    download = await info.value
    assert download.suggested_filename.endswith(".txt")
    assert result["thai"].strip() in Path(await download.path()).read_text(encoding="utf-8")


async def test_a_doubtful_thai_translation_is_marked_as_a_rough_draft(new_tab, openai, blob_store):
    # The translation loses the year and turns the grey lamp blue, twice.
    openai.script(Reply(LAMP), Reply(LAMP_BLUE), Reply(LAMP_BLUE))
    tab = await new_tab()
    page = tab.page
    await page.set_input_files("#files", sample_photo("coffee.png"))
    events = await stream_response_events(
        tab, lambda: page.get_by_role("button", name="Write my story").click()
    )
    [warning] = dict(events)["result"]["warnings"]
    note = page.get_by_role("note")
    await expect(note).to_be_visible()
    await expect(note).to_contain_text("Rough draft")
    await expect(note.locator("li")).to_have_text(warning)
    assert "1998" in warning
    assert await page.locator("#thai").get_attribute("aria-describedby") == "thai-draft"
    assert await note.evaluate("el => el.closest('.story-card').classList.contains('is-rough')")
    await tab.shot("photo-rough-thai")


ALT_ENGLISH = "A photo of an espresso, in warm light, mostly brown and white."
ALT_THAI = "ภาพถ่ายของเอสเปรสโซ ในแสงอบอุ่น ส่วนใหญ่เป็นสีน้ำตาลและสีขาว"


async def test_a_story_model_that_cannot_see_is_said_kindly(new_tab, openai, blob_store):
    tab = await new_tab()
    page = tab.page

    usage = {"input_tokens": 300, "output_tokens": 120, "total_tokens": 420}
    result = {
        "english": "The Quiet Cup\n\nSteam rose from the cup as the morning began.",
        "thai": "ถ้วยที่เงียบสงบ\n\nไอน้ำลอยขึ้นจากถ้วยเมื่อเช้าวันใหม่เริ่มต้น",
        "token_usage": usage,
        "usage_by_stage": {"story": usage, "translation": usage},
        # What the offline default answers: its story model is text-only.
        "models": {
            "story": "qwen2.5-1.5b",
            "translation": "qwen2.5-1.5b",
            "story_saw_pictures": False,
        },
        "media": "image",
        "frames_used": 1,
        "request_id": "text-only-1",
        "warnings": [
            "The offline model writes at most about 260 words: this story is shorter than "
            "a long one (350 to 450 words)."
        ],
        "title": {"english": "The Quiet Cup", "thai": "ถ้วยที่เงียบสงบ"},
        "alt_text": [{"english": ALT_ENGLISH, "thai": ALT_THAI}],
    }

    job_id = "job_" + "7" * 32

    async def accepted(route: Route) -> None:
        if route.request.method != "POST":
            await route.fallback()
            return
        await route.fulfill(status=202, json=accepted_job(job_id))

    async def as_if_text_only(route: Route) -> None:
        body = sse_body(
            ("result", result), ("status", {"status": "succeeded", "attempts": 1}), first_id=1
        )
        await route.fulfill(status=200, content_type="text/event-stream", body=body)

    await page.route("**/jobs", accepted)
    await page.route(f"**/jobs/{job_id}/events", as_if_text_only)
    await page.set_input_files("#files", sample_photo("coffee.png"))
    await page.get_by_role("button", name="Write my story").click()
    note = page.locator("#sight-note")
    await expect(note).to_be_visible(timeout=30_000)
    await expect(note).to_contain_text("cannot see pictures")
    await expect(note).to_contain_text("OPENAI_API_KEY")
    assert await page.locator("#english").get_attribute("aria-describedby") == "sight-note"
    await expect(page.locator("#media-line")).to_contain_text("described to the model")
    # A note about the story is said with the story, not as a doubt about the Thai.
    await expect(note).to_contain_text("shorter than a long one")
    await expect(page.locator("#thai-draft")).to_have_count(0)
    # The alt text, in both languages, under the stories and in the downloads.
    await page.get_by_text("What the pictures show").click()
    alt = page.locator("#alt-text-list li")
    await expect(alt).to_have_count(1)
    await expect(alt).to_contain_text("A photo of an espresso")
    assert await alt.locator("[lang=th]").inner_text() == ALT_THAI
    async with page.expect_download() as info:
        await page.get_by_role("button", name="Download .md").click()
    markdown = Path(await (await info.value).path()).read_text(encoding="utf-8")
    assert markdown.startswith("# The Quiet Cup · ถ้วยที่เงียบสงบ\n")
    assert "## What the pictures show (alt text)\n\n- 1. A photo of an espresso" in markdown
    await tab.shot("photo-text-only-model")

    # A model that sees gets no such note.
    await page.unroute("**/jobs")
    await page.set_input_files("#files", sample_photo("coffee.png"))
    await page.get_by_role("button", name="Write my story").click()
    await expect(page.locator("#media-line")).to_contain_text("shown to the model", timeout=30_000)
    await expect(note).to_have_count(0)


async def test_video_shows_a_preview_and_the_stages_advance_in_order(new_tab, openai, blob_store):
    tab = await new_tab()
    page = tab.page
    # Slow model answers, so every stage stays on screen long enough to be seen.
    openai.script(Delay(0.6), Delay(0.6))
    await page.set_input_files("#files", sample_video("bigbuckbunny.mp4"))
    video = page.locator("#previews video")
    await expect(video).to_have_count(1)
    await video.evaluate(
        "v => v.readyState >= 1 || new Promise(ok => v.addEventListener('loadedmetadata', ok, {once: true}))"
    )
    assert await video.evaluate("v => v.duration") > 1
    assert await video.evaluate("v => v.controls")
    await tab.shot("video-1-ready")

    async with page.expect_response(lambda r: is_events(r.url), timeout=60_000) as info:
        await page.get_by_role("button", name="Write my story").click()
        await expect(page.locator('.stage.is-active[data-stage="translating"]')).to_be_visible(
            timeout=60_000
        )
        await tab.shot("video-2-progress")
    events = sse_events(await (await info.value).text())
    await expect(page.locator("#results")).to_be_visible(timeout=60_000)
    await expect(page.locator("#progress")).to_be_hidden()

    shown = await page.evaluate("window.__stages")
    stages = [s["stage"] for s in shown]
    assert stages[0] == "uploading", shown
    assert {"extracting_frames", "writing_story", "translating"} <= set(stages), shown
    positions = [STAGE_ORDER.index(s) for s in stages]
    assert positions == sorted(positions) and len(set(positions)) == len(positions), shown
    # Every stage the server announced was shown, in its order, each with a readable line.
    assert stages == [data["stage"] for name, data in events if name == "stage"], (shown, events)
    assert all(s["text"] for s in shown), shown
    # The English story was on screen while the Thai one was still being written.
    assert any(name == "story" for name, _ in events), f"the stream carried no story text: {events}"
    live = await page.evaluate("window.__liveStory")
    assert live.strip(), "no English text was on screen while the story was being written"
    assert live.strip()[:30] in await page.locator("#english").inner_text(), live
    await expect(page.locator("#media-line")).to_contain_text("1 video")
    await tab.shot("video-3-result")


async def test_thai_fills_its_column_while_the_english_is_still_being_written(
    new_tab, openai, blob_store
):
    tab = await new_tab()
    page = tab.page
    # The story streams a word every 0.1 s (about 5 s in all); each paragraph is
    # translated as soon as it is finished, so Thai arrives long before the last word.
    openai.script(Reply(SLOW_STORY, pace=0.1))
    await page.set_input_files("#files", sample_photo("rocket.jpg"))
    live_thai = page.locator("#live-thai")
    last_paragraph = SLOW_STORY.split("\n\n")[-1]

    async with page.expect_response(lambda r: is_events(r.url), timeout=60_000) as info:
        await page.get_by_role("button", name="Write my story").click()
        # The title and the first paragraph, in Thai, in the Thai column...
        await expect(live_thai.locator("p").nth(1)).to_be_attached(timeout=30_000)
        now = await page.evaluate(
            """({
                english: document.getElementById("live-text").innerText,
                thai: document.getElementById("live-thai").innerText,
                resultShown: !document.getElementById("results").hidden,
            })"""
        )
        # ...while the English was still arriving, and before any result.
        assert last_paragraph not in now["english"], now
        assert not now["resultShown"], now
        assert THAI.search(now["thai"]), now
        await tab.shot("thai-live")
    events = sse_events(await (await info.value).text())
    await expect(page.locator("#results")).to_be_visible(timeout=60_000)
    await expect(page.locator("#progress")).to_be_hidden()

    kinds = [name for name, _ in events if name != "status"]
    assert kinds[-1] == "result", kinds
    # Thai was sent between pieces of the English, not after it.
    assert kinds.index("thai") < len(kinds) - 1 - kinds[::-1].index("story"), kinds
    result = dict(events)["result"]

    seen = await page.evaluate("window.__liveThai")
    assert seen, "the Thai column never showed any Thai before the result"
    first = seen[0]
    # The first Thai was on screen while the story was being written and no result was shown.
    assert not first["resultShown"] and first["writing"], first
    assert last_paragraph not in first["english"], first
    # Shown as the final Thai is: the title line first, then paragraphs; Thai, read out politely.
    assert await live_thai.evaluate("el => el.closest('[lang]').lang") == "th"
    assert await live_thai.get_attribute("aria-live") == "polite"
    assert await live_thai.evaluate("el => el.firstElementChild.className") == "story__title"
    final_paragraphs = [p.strip() for p in result["thai"].split("\n\n")]
    live_paragraphs = seen[-1]["paragraphs"]
    assert live_paragraphs == final_paragraphs[: len(live_paragraphs)], (seen[-1], result)
    # The two columns stand side by side, and the Thai arriving moved the English not at all.
    english_box = await page.evaluate("window.__englishBox")
    assert first["thaiBox"]["left"] >= first["englishBox"]["right"], first
    assert (first["englishBox"]["left"], first["englishBox"]["width"]) == (
        english_box["left"],
        english_box["width"],
    ), (english_box, first)

    # The result replaces what was streamed.
    thai = page.locator("#thai")
    await expect(thai.locator("p")).to_have_count(len(final_paragraphs))
    assert [p.strip() for p in await thai.locator("p").all_inner_texts()] == final_paragraphs
    await expect(thai.locator("p").first).to_have_class("story__title")
    await tab.shot("thai-result")


async def test_oversized_files_are_refused_without_a_request(new_tab, tmp_path):
    tab = await new_tab()
    page = tab.page
    big_photo = tmp_path / "holiday.jpg"
    with big_photo.open("wb") as f:
        f.write(b"\xff\xd8\xff\xe0")
        f.truncate(10 * MIB + 1)
    big_video = tmp_path / "long.mp4"
    with big_video.open("wb") as f:
        f.truncate(50 * MIB + 1)

    await page.set_input_files("#files", big_photo)
    error = page.locator("#files-error")
    await expect(error).to_be_visible()
    await expect(error).to_contain_text(
        "“holiday.jpg” is too large (10.1 MB): each photo can be at most 10 MB"
    )
    await expect(page.locator("#previews li")).to_have_count(0)
    await tab.shot("oversized-photo")

    await page.set_input_files("#files", big_video)
    await expect(error).to_contain_text(
        "“long.mp4” is too large (50.1 MB): a video can be at most 50 MB"
    )
    await page.get_by_role("button", name="Write my story").click()
    await expect(error).to_contain_text("Add at least one photo or a video first")
    await page.wait_for_timeout(300)
    assert tab.story_requests() == []


async def test_wrong_type_mixed_media_and_too_many_photos_are_refused_in_the_browser(
    new_tab, tmp_path
):
    tab = await new_tab()
    page = tab.page
    error = page.locator("#files-error")

    await page.set_input_files("#files", write_other_image(tmp_path / "cat.bmp", "BMP"))
    await expect(error).to_contain_text("“cat.bmp” is not a photo or video this service reads")
    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture")
    await page.set_input_files("#files", notes)
    await expect(error).to_contain_text(
        "“notes.txt” is not a photo or video this service reads. Choose JPG, PNG, HEIC"
    )
    await tab.shot("wrong-type")

    # A photo, then a video: the video must be sent on its own.
    await page.set_input_files("#files", sample_photo("rocket.jpg"))
    await expect(error).to_be_hidden()
    await page.set_input_files("#files", sample_video("bigbuckbunny.mp4"))
    await expect(error).to_contain_text("a video is sent on its own")
    await expect(page.locator("#previews li")).to_have_count(1)

    # Eleven photos: the first ten are kept, the eleventh is refused.
    copies = []
    for i in range(11):
        copy = tmp_path / f"photo-{i:02d}.png"
        shutil.copyfile(sample_photo("coffee.png"), copy)
        copies.append(copy)
    await page.get_by_role("button", name="Remove rocket.jpg").click()
    await expect(page.locator("#previews li")).to_have_count(0)
    await page.set_input_files("#files", copies)
    await expect(page.locator("#previews li")).to_have_count(10)
    await expect(error).to_contain_text("“photo-10.png” was not added: at most 10 photos per story")
    await tab.shot("too-many-photos")
    assert tab.story_requests() == []


async def test_a_heic_photo_and_a_webm_video_are_taken_and_a_heic_makes_a_story(
    new_tab, openai, blob_store, tmp_path
):
    tab = await new_tab()
    page = tab.page
    heic = tmp_path / "IMG_0001.HEIC"
    Image.open(sample_photo("rocket.jpg")).save(heic, format="HEIF")
    webm = write_video(tmp_path / "capture.webm", 1, container_format="webm", codec="libvpx-vp9")

    # Chromium plays WebM: its preview is a player.
    await page.set_input_files("#files", webm)
    await expect(page.locator("#files-error")).to_be_hidden()
    await expect(page.locator("#previews video")).to_have_count(1)
    await page.get_by_role("button", name="Remove capture.webm").click()

    # Chromium cannot draw HEIC: a named placeholder stands in, and the story is told.
    await page.set_input_files("#files", heic)
    await expect(page.locator("#files-error")).to_be_hidden()
    await expect(page.locator("#previews .preview__none")).to_have_text(
        "HEIC: no preview here, the story will use it"
    )
    await expect(page.locator("#selection-summary")).to_contain_text("1 photo selected")
    await tab.shot("heic-placeholder")
    events = await stream_response_events(
        tab, lambda: page.get_by_role("button", name="Write my story").click()
    )
    assert "result" in dict(events), events
    await expect(page.locator("#english")).to_contain_text("a story about 1 picture")
    assert len(openai.requests[0].image_urls) == 1


async def test_server_detail_is_shown_when_the_server_refuses(new_tab, tmp_path, blob_store):
    tab = await new_tab()
    page = tab.page
    # Named like a photo, so the browser lets it through; the server reads its bytes.
    fake = write_garbage(tmp_path / "not-really.jpg", size=2048)
    await page.set_input_files("#files", fake)
    async with page.expect_response(lambda r: is_submission(r.request)) as info:
        await page.get_by_role("button", name="Write my story").click()
    response = await info.value
    assert response.status == 400
    detail = (await response.json())["detail"]
    await expect(page.locator("#error")).to_be_visible()
    await expect(page.locator("#error-title")).to_contain_text("HTTP 400")
    await expect(page.locator("#error-detail")).to_have_text(detail)
    await tab.shot("server-400")


async def test_failure_after_the_stream_began_shows_its_status_and_detail(
    new_tab, openai, blob_store
):
    tab = await new_tab()
    page = tab.page
    openai.script(*[Status(500)] * 4)
    await page.set_input_files("#files", sample_photo("rocket.jpg"))
    events = await stream_response_events(
        tab, lambda: page.get_by_role("button", name="Write my story").click()
    )
    (name, payload), (_, last) = events[-2:]
    assert name == "error" and last == {"status": "failed", "attempts": 1}, events
    await expect(page.locator("#error")).to_be_visible()
    await expect(page.locator("#error-title")).to_contain_text(f"HTTP {payload['status']}")
    await expect(page.locator("#error-detail")).to_have_text(payload["detail"])
    await expect(page.locator(".stage.is-failed")).to_have_count(1)
    await expect(page.get_by_role("button", name="Write my story")).to_be_enabled()
    await tab.shot("stream-error")

    # The failed job's address says the same, from the job.
    await page.reload()
    await expect(page.locator("#error-title")).to_contain_text(f"HTTP {payload['status']}")
    await expect(page.locator("#error-detail")).to_have_text(payload["detail"])
    await expect(page.locator("#progress")).to_be_hidden()
    await expect(page.get_by_role("button", name="Write my story")).to_be_enabled()


# ---- the story as a job: it outlives the page, and its address brings it back --------------


async def write_a_slow_story(tab: Tab) -> str:
    """Submit a photo for SLOW_STORY (scripted by the caller) and wait until two of its
    paragraphs are on screen; returns the job's id, from the page's address."""
    page = tab.page
    await page.set_input_files("#files", sample_photo("rocket.jpg"))
    await page.get_by_role("button", name="Write my story").click()
    await expect(page).to_have_url(JOB_ADDRESS)
    await expect(page.locator("#live-text p").nth(1)).to_be_attached(timeout=30_000)
    return job_id_of(page)


async def test_a_story_goes_on_when_its_page_is_closed_and_its_address_shows_it(
    new_tab, site, openai, blob_store
):
    # The test: start a story, close the page mid-story, reopen the address.
    openai.script(Reply(SLOW_STORY, pace=0.1))
    tab = await new_tab()
    job_id = await write_a_slow_story(tab)
    note = tab.page.locator("#leave-note")
    await expect(note).to_be_visible()
    await expect(note).to_contain_text("You can close this tab")
    await expect(note).to_contain_text("come back to this page's address until")
    await tab.shot("job-1-desktop-running")
    address = tab.page.url
    await tab.page.get_by_role("button", name="Copy link").click()
    await expect(tab.page.locator("#copy-link")).to_have_text("Link copied ✓")
    assert await tab.page.evaluate("navigator.clipboard.readText()") == address
    assert (await job_of(site, job_id))["status"] == "running"
    await tab.page.context.close()  # the tab, its connection and its session storage

    # No page is open, and the story is written all the same, once.
    job = await until_ended(site, job_id)
    assert job["status"] == "succeeded" and job["attempts"] == 1, job
    result = job["result"]
    assert paragraphs(result["english"])[-1] == paragraphs(SLOW_STORY)[-1]

    again = await new_tab(path=address)
    page = again.page
    await expect(page.locator("#results")).to_be_visible()
    assert [p.strip() for p in await page.locator("#english p").all_inner_texts()] == paragraphs(
        result["english"]
    )
    assert [p.strip() for p in await page.locator("#thai p").all_inner_texts()] == paragraphs(
        result["thai"]
    )
    await expect(page.locator("#media-line")).to_contain_text("1 photo, 1 picture")
    await expect(page.locator("#progress")).to_be_hidden()
    await expect(page.get_by_role("button", name="Write my story")).to_be_enabled()
    # A finished job is read once, not replayed.
    assert [r.url for r in again.story_requests()] == [f"{site}/jobs/{job_id}"]
    await again.shot("job-2-desktop-reopened")

    async with page.expect_download() as info:
        await page.get_by_role("button", name="Download .md").click()
    markdown = Path(await (await info.value).path()).read_text(encoding="utf-8")
    assert result["english"].strip() in markdown and result["thai"].strip() in markdown

    # Starting again leaves the story's address.
    await page.get_by_role("button", name="Start again").click()
    assert JOB_ADDRESS.search(page.url) is None
    await expect(page.locator("#results")).to_be_hidden()


async def test_a_reload_mid_story_shows_it_again_with_no_text_twice_on_a_phone(
    new_tab, site, openai, blob_store
):
    openai.script(Reply(SLOW_STORY, pace=0.1))
    tab = await new_tab(width=360, height=740)
    page = tab.page
    job_id = await write_a_slow_story(tab)
    await expect(page.locator("#leave-note")).to_be_visible()
    assert await tab.scroll_width() <= 360
    await tab.shot("job-phone-1-running")

    await page.reload()
    # The same job: the story so far from its start, then on as it is written.
    assert job_id_of(page) == job_id
    await expect(page.locator("#leave-note")).to_be_visible()
    await expect(page.locator("#live-text p").nth(1)).to_be_attached()
    assert await page.locator("#results").is_hidden(), "the story ended before the reload"
    await expect(page.get_by_role("button", name="Cancel")).to_be_visible()
    assert await tab.scroll_width() <= 360
    await tab.shot("job-phone-2-reloaded")

    await expect(page.locator("#results")).to_be_visible(timeout=60_000)
    result = (await job_of(site, job_id))["result"]
    final = paragraphs(result["english"])
    states = await page.evaluate("window.__liveParagraphs")
    assert states and states[-1] == final, states
    shown_in_order(states, final)
    assert len(tab.submissions()) == 1  # the reload sent nothing again
    assert await tab.scroll_width() <= 360
    await tab.shot("job-phone-3-result")


async def test_a_dropped_connection_resumes_after_the_last_event_seen(
    new_tab, site, openai, blob_store
):
    openai.script(Reply(SLOW_STORY, pace=0.1))
    tab = await new_tab()
    page = tab.page
    cut: dict[str, str] = {}

    async def drop_the_first(route: Route) -> None:
        if cut:
            await route.continue_()
            return
        # The first connection gets what the server sends up to some story text, then a
        # half event, and ends: as a connection lost mid-story.
        text = complete = ""
        async with (
            httpx.AsyncClient(base_url=site, timeout=30) as client,
            client.stream("GET", route.request.url) as answer,
        ):
            async for piece in answer.aiter_text():
                text += piece.replace("\r\n", "\n")
                complete = text[: text.rfind("\n\n") + 2] if "\n\n" in text else ""
                if len(re.findall(r"^event: story$", complete, re.M)) >= 3:
                    break
        cut["after"] = re.findall(r"^id: (\d+)$", complete, re.M)[-1]
        half = 'id: 999999999\nevent: story\ndata: {"text": " NEVER SHOWN"}'
        await route.fulfill(status=200, content_type="text/event-stream", body=complete + half)

    await page.route(lambda url: is_events(url), drop_the_first)
    await page.set_input_files("#files", sample_photo("rocket.jpg"))
    await page.get_by_role("button", name="Write my story").click()
    await expect(page.locator("#results")).to_be_visible(timeout=60_000)

    first, second = tab.event_requests()
    assert "last-event-id" not in first.headers
    assert second.headers.get("last-event-id") == cut["after"]
    result = (await job_of(site, job_id_of(page)))["result"]
    final = paragraphs(result["english"])
    states = await page.evaluate("window.__liveParagraphs")
    assert states[-1] == final, states
    shown_in_order(states, final)
    assert "NEVER SHOWN" not in await page.content()


async def test_cancel_from_the_page_stops_the_story_and_its_address_says_so(
    new_tab, site, openai, blob_store
):
    openai.script(Reply("The Long Road\n\n" + "They walked on. " * 200, pace=0.05))
    tab = await new_tab()
    page = tab.page
    await page.set_input_files("#files", sample_photo("rocket.jpg"))
    await page.get_by_role("button", name="Write my story").click()
    await expect(page.locator("#live-text p").nth(1)).to_be_attached(timeout=30_000)
    cancel = page.get_by_role("button", name="Cancel")
    async with page.expect_response(lambda r: r.url.endswith("/cancel")) as info:
        await cancel.click()
    assert (await info.value).status == 200
    notice = page.locator("#error")
    await expect(notice).to_contain_text("This story was cancelled")
    await expect(cancel).to_be_hidden()
    await expect(page.locator("#progress")).to_be_hidden()
    await expect(page.get_by_role("button", name="Write my story")).to_be_enabled()
    calls = openai.stats()["chat_calls"]
    await asyncio.sleep(1.5)
    after = openai.stats()
    assert after["in_flight"] == 0 and after["chat_calls"] == calls  # stopped, none after
    job = await job_of(site, job_id_of(page))
    assert job["status"] == "canceled" and job["result"] is None, job
    await tab.shot("job-cancelled")

    await page.reload()
    await expect(notice).to_contain_text("This story was cancelled")
    await expect(page.get_by_role("button", name="Write my story")).to_be_enabled()


async def test_a_job_run_again_starts_its_story_again(new_tab):
    """A gateway lost mid-job: the job's next attempt (a `status` running with a higher
    attempt) writes the story from the start, and the page shows only that one."""
    tab = await new_tab()
    page = tab.page
    job_id = "job_" + "a" * 32
    usage = {"input_tokens": 10, "output_tokens": 20, "total_tokens": 30}
    result = {
        "english": "The Second Try\n\nIt went all the way.",
        "thai": "ครั้งที่สองของการเดินทาง\n\nมันไปได้ตลอดทางจนถึงปลายทาง",
        "token_usage": usage,
        "usage_by_stage": {"story": usage, "translation": usage},
        "models": {"story": "fake", "translation": "fake"},
        "media": "image",
        "frames_used": 1,
        "request_id": job_id,
        "warnings": [],
    }
    writing = {"stage": "writing_story", "detail": "Writing the story"}
    # Three connections, each ended by the server: the page resumes after the last id.
    parts = [
        sse_body(
            ("status", {"status": "queued", "attempts": 0}),
            ("status", {"status": "running", "attempts": 1}),
            ("stage", {"stage": "uploading", "detail": "Storing your files"}),
            ("stage", writing),
            ("story", {"text": "The First Try\n\nIt began"}),
            first_id=1,
        ),
        sse_body(
            ("status", {"status": "running", "attempts": 2}),
            ("stage", {"stage": "uploading", "detail": "Storing your files"}),
            ("stage", writing),
            ("story", {"text": "The Second Try\n\nIt went"}),
            first_id=6,
        ),
        sse_body(
            ("story", {"text": " all the way."}),
            ("result", result),
            ("status", {"status": "succeeded", "attempts": 2}),
            first_id=10,
        ),
    ]
    resumed_after: list[str | None] = []

    async def accepted(route: Route) -> None:
        await route.fulfill(status=202, json=accepted_job(job_id))

    async def events(route: Route) -> None:
        resumed_after.append(route.request.headers.get("last-event-id"))
        body = parts[min(len(resumed_after), len(parts)) - 1]
        await route.fulfill(status=200, content_type="text/event-stream", body=body)

    await page.route("**/jobs", accepted)
    await page.route(f"**/jobs/{job_id}/events", events)
    await page.set_input_files("#files", sample_photo("rocket.jpg"))
    await page.get_by_role("button", name="Write my story").click()
    await expect(page.locator("#results")).to_be_visible()
    assert resumed_after == [None, "5", "9"]
    states = await page.evaluate("window.__liveParagraphs")
    assert ["The First Try", "It began"] in states, states
    restarted = states.index(["The First Try", "It began"]) + 1
    assert all("The First Try" not in state for state in states[restarted:]), states
    assert states[-1] == ["The Second Try", "It went all the way."], states
    await expect(page.locator("#english")).to_have_text(re.compile("It went all the way"))


async def test_an_unknown_or_expired_job_address_says_so(new_tab):
    tab = await new_tab(path="/#job=job_" + "0" * 32)
    page = tab.page
    await expect(page.locator("#error-title")).to_contain_text("HTTP 404")
    await expect(page.locator("#error-detail")).to_contain_text("expired or been deleted")
    await expect(page.locator("#progress")).to_be_hidden()
    await expect(page.get_by_role("button", name="Write my story")).to_be_enabled()
    await tab.shot("job-unknown")


async def test_page_fits_a_360px_phone_and_the_stories_stack(new_tab, tmp_path, openai, blob_store):
    tab = await new_tab(width=360, height=740)
    page = tab.page
    assert await tab.scroll_width() <= 360
    await tab.shot("phone-1-empty")
    long_name = tmp_path / (
        "a-photo-with-a-remarkably-long-file-name-from-a-phone-camera-" + "x" * 40 + ".jpg"
    )
    shutil.copyfile(sample_photo("rocket.jpg"), long_name)
    await page.set_input_files("#files", [long_name, sample_photo("coffee.png")])
    await expect(page.locator("#previews li")).to_have_count(2)
    assert await tab.scroll_width() <= 360
    await tab.shot("phone-2-selected")

    await page.get_by_role("button", name="Write my story").click()
    await expect(page.locator("#results")).to_be_visible(timeout=60_000)
    assert await tab.scroll_width() <= 360
    english, thai = await story_boxes(page)
    assert thai["top"] >= english["bottom"], (english, thai)
    await tab.shot("phone-3-result")

    docs = await new_tab(width=360, height=740, path="/api/docs")
    assert await docs.scroll_width() <= 360
    await docs.shot("phone-docs-top", full_page=False)
    await docs.page.locator("#post-analyze-stream").scroll_into_view_if_needed()
    await docs.shot("phone-docs-stream", full_page=False)


async def test_wide_screen_shows_the_stories_side_by_side(new_tab, openai, blob_store):
    tab = await new_tab(width=1100)
    page = tab.page
    await page.set_input_files("#files", sample_photo("chelsea.png"))
    await page.get_by_role("button", name="Write my story").click()
    await expect(page.locator("#results")).to_be_visible(timeout=60_000)
    english, thai = await story_boxes(page)
    assert thai["left"] >= english["right"] and abs(thai["top"] - english["top"]) < 5, (
        english,
        thai,
    )


async def test_keyboard_reaches_the_picker_presets_prompt_and_submit(new_tab, openai, blob_store):
    tab = await new_tab()
    page = tab.page
    reached = []
    for _ in range(12):
        await page.keyboard.press("Tab")
        reached.append(
            await page.evaluate(
                "(() => { const e = document.activeElement; return e.id || e.textContent.trim() || e.tagName; })()"
            )
        )
    order = [reached.index(x) for x in ("files", "Travel show", "prompt", "submit")]
    assert order == sorted(order), reached

    # The hidden file input's label shows the focus ring while the input has focus.
    await page.focus("#files")
    outline = await page.locator(".dropzone__pick").evaluate(
        "el => getComputedStyle(el).outlineStyle"
    )
    assert outline != "none"
    await tab.shot("keyboard-focus-picker", full_page=False)

    # Every control has a name a screen reader can read out.
    await expect(page.get_by_label("Your own instructions")).to_be_visible()
    await expect(page.get_by_label("Choose files")).to_have_count(1)

    await page.set_input_files("#files", [sample_photo("rocket.jpg"), sample_photo("coffee.png")])
    await page.get_by_role("button", name="Remove rocket.jpg").focus()
    await page.keyboard.press("Enter")
    await expect(page.locator("#previews li")).to_have_count(1)
    assert (
        await page.evaluate("document.activeElement.getAttribute('aria-label')")
        == "Remove coffee.png"
    )

    await page.focus("#prompt")
    await page.keyboard.type("A short tale about a cup of coffee.")
    await expect(page.locator("#prompt-used")).to_have_text("35")
    # Then the length (one stop for the three), the cast's button, and the submit.
    for stop in ("#length-medium", "#cast-add", "#submit"):
        await page.keyboard.press("Tab")
        await expect(page.locator(stop)).to_be_focused()
    await page.keyboard.press("Enter")
    await expect(page.locator("#results")).to_be_visible(timeout=60_000)
    await expect(page.locator("#english-title")).to_be_focused()
    assert "A short tale about a cup of coffee." in openai.requests[0].text


def docs_pre_blocks() -> list[str]:
    text = (STATIC / "docs.html").read_text()
    return [html.unescape(block) for block in re.findall(r"<pre>(.*?)</pre>", text, re.S)]


async def test_docs_page_links_the_openapi_ui_and_its_javascript_examples_run(
    new_tab, site, openai, blob_store
):
    tab = await new_tab(path="/api/docs")
    page = tab.page
    for href in ("/schema/swagger", "/schema/openapi.json", "/"):
        await expect(page.locator(f'a[href="{href}"]').first).to_be_attached()
    for path in ("/schema/swagger", "/schema/openapi.json", "/static/fonts/OFL.txt"):
        response = await page.request.get(path)
        assert response.status == 200, path
    await expect(page.locator("#post-analyze-stream")).to_be_visible()
    await tab.shot("docs")

    # A file input to hand the examples a real File, as their comments say.
    await page.evaluate(
        "document.body.insertAdjacentHTML('beforeend', '<input type=file id=example-input>')"
    )
    blocks = docs_pre_blocks()
    seed_js = next(b for b in blocks if "fetch('http://localhost:8000/analyze/'" in b)
    stream_js = next(b for b in blocks if "fetch('http://localhost:8000/analyze/stream'" in b)

    async def run_example(code: str, media: Path, variable: str) -> list:
        await page.set_input_files("#example-input", media)
        code = code.replace("http://localhost:8000", site)
        # The example runs verbatim; only `console` is shadowed to collect what it prints.
        return await page.evaluate(
            f"""async () => {{
                const logged = [];
                const console = {{
                    log: (...args) => logged.push(["log", ...args]),
                    error: (...args) => logged.push(["error", ...args.map(String)]),
                }};
                const {variable} = document.getElementById("example-input").files[0];
                await (async () => {{
{code}
                }})();
                for (let i = 0; i < 600 && logged.length < 3; i++) await new Promise(r => setTimeout(r, 100));
                return logged;
            }}"""
        )

    logged = await run_example(seed_js, sample_photo("rocket.jpg"), "imageFile")
    assert [entry[0] for entry in logged] == ["log", "log", "log"], logged
    assert "a story about 1 picture" in logged[0][1] and THAI.search(logged[1][1])
    assert set(logged[2][1]) == {"input_tokens", "output_tokens", "total_tokens"}

    logged = await run_example(stream_js, sample_video("bigbuckbunny.mp4"), "videoFile")
    stages = [entry[2] for entry in logged if entry[1] == "Stage:"]
    assert stages and stages[0] == "uploading" and "translating" in stages, logged
    final = logged[-1]
    assert final[0] == "log" and THAI.search(final[2]) and "total_tokens" in final[3], logged


async def test_docs_streaming_curl_example_runs_verbatim(site, openai, blob_store, tmp_path):
    command = next(b for b in docs_pre_blocks() if b.startswith("curl -N"))
    command = command.replace(
        "/path/to/video.mp4", shlex.quote(str(sample_video("bigbuckbunny.mp4")))
    )
    command = command.replace("http://localhost:8000", site)
    process = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        command + " --silent --show-error",
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, err.decode()
    events = sse_events(out.decode())
    names = [name for name, _ in events]
    assert names[0] == "stage" and names[-1] == "result", names
    assert "travel show" in openai.requests[0].text.lower()


async def test_the_page_asks_for_the_api_key_once_and_keeps_it_for_the_tab(
    browser, nats_url, services, openai, blob_store, tmp_path
):
    key = "browser-test-key-0123456789"
    port = free_port()
    async with running_gateway(
        nats_url, port, IMGSTORY_API_KEYS=key, IMGSTORY_UPLOAD_DIR=str(tmp_path)
    ):
        tab = await open_tab(browser, f"http://127.0.0.1:{port}")
        page = tab.page
        dialog = page.locator("#key-dialog")
        await page.set_input_files("#files", sample_photo("rocket.jpg"))
        await page.get_by_role("button", name="Write my story").click()
        # The page knew a key is needed: it asks before sending anything.
        await expect(dialog).to_be_visible()
        assert tab.story_requests() == []
        await page.fill("#api-key", "not-the-key")
        await page.get_by_role("button", name="Use this key").click()
        # The server refuses it: the page forgets it and asks again.
        await expect(page.locator("#key-reason")).to_contain_text("did not accept that key")
        await tab.shot("api-key-asked-again")
        await page.fill("#api-key", key)
        await page.get_by_role("button", name="Use this key").click()
        await expect(page.locator("#results")).to_be_visible()
        await expect(page.locator("#english")).to_contain_text("a story about 1 picture")
        # Coming back to the story's address takes the key again: it is kept for this tab only.
        assert await page.locator("#leave-key").get_attribute("hidden") is None
        # A second story in the same tab sends the kept key without asking.
        async with page.expect_response(lambda r: is_submission(r.request)) as info:
            await page.get_by_role("button", name="Write my story").click()
        assert (await info.value).status == 202
        await expect(dialog).to_be_hidden()
        await expect(page.locator("#results")).to_be_visible()
        sent = [r.headers.get("authorization") for r in tab.submissions()]
        assert sent == ["Bearer not-the-key", f"Bearer {key}", f"Bearer {key}"]
        # EventSource could not have sent it: the job's events are read with the key too.
        followed = [r.headers.get("authorization") for r in tab.event_requests()]
        assert len(followed) >= 2 and set(followed) == {f"Bearer {key}"}, followed
        assert await page.evaluate("sessionStorage.getItem('imgstory.apiKey')") == key
        assert await page.evaluate("localStorage.length") == 0
        assert tab.problems == []

        # The story's link opened in a new tab (no key kept there) asks for the key first.
        shared = await open_tab(browser, f"http://127.0.0.1:{port}", path=page.url)
        await expect(shared.page.locator("#key-dialog")).to_be_visible()
        await expect(shared.page.locator("#key-reason")).to_contain_text("written with an API key")
        await shared.page.fill("#api-key", key)
        await shared.page.get_by_role("button", name="Use this key").click()
        await expect(shared.page.locator("#results")).to_be_visible()
        english = page.locator("#english p")
        assert await shared.page.locator("#english p").all_inner_texts() == (
            await english.all_inner_texts()
        )
        assert shared.problems == []
        await shared.page.context.close()
        await tab.page.context.close()


async def test_length_and_names_steer_the_story_and_write_another_retells_it(
    new_tab, openai, blob_store
):
    tab = await new_tab()
    page = tab.page
    await page.set_input_files("#files", sample_photo("rocket.jpg"))
    # The length is three radio buttons, reached and changed by keyboard.
    await expect(page.get_by_role("radio", name="Medium")).to_be_checked()
    await page.get_by_role("radio", name="Medium").focus()
    await page.keyboard.press("ArrowLeft")
    await expect(page.get_by_role("radio", name="Short")).to_be_checked()
    # The cast: a row per name, each field named for a screen reader.
    await page.get_by_role("button", name="+ Add a name").click()
    await expect(page.get_by_label("Name 1", exact=True)).to_be_focused()
    await page.keyboard.type("Pumpkin")
    await page.get_by_label("Who is name 1").fill("the orange cat")
    await page.get_by_role("button", name="+ Add a name").click()
    await page.get_by_label("Name 2", exact=True).fill("ยายสมศรี")
    # A name with nobody described is said before anything is sent.
    await page.get_by_role("button", name="Write my story").click()
    await expect(page.locator("#files-error")).to_contain_text("Say who or what ยายสมศรี is")
    assert tab.submissions() == []
    await page.get_by_label("Who is name 2").fill("the woman in the blue dress")
    await tab.shot("steer-1-ready")

    await page.get_by_role("button", name="Write my story").click()
    await expect(page.locator("#results")).to_be_visible(timeout=60_000)
    first_job = job_id_of(page)
    asked_for = (await until_ended(tab.base, first_job))["request"]
    assert asked_for == {
        "prompt": None,
        "length": "short",
        "cast": ["Pumpkin: the orange cat", "ยายสมศรี: the woman in the blue dress"],
    }
    first = openai.requests[0]
    assert "<cast>\nPumpkin: the orange cat\nยายสมศรี: the woman in the blue dress\n</cast>" in (
        first.text
    )
    assert "80 to 120 words" in first.text

    # Another take: longer, from the same photo, nothing uploaded again.
    another = page.get_by_role("button", name="Write another")
    await expect(another).to_be_visible()
    await page.get_by_role("radio", name="Long").check()
    asked = len(openai.requests)
    async with page.expect_response(lambda r: r.url.endswith("/again")) as info:
        await another.click()
    answer = await info.value
    assert answer.status == 202
    sent = json.loads(answer.request.post_data or "{}")
    assert sent == {
        "prompt": "",
        "length": "long",
        "cast": "Pumpkin: the orange cat\nยายสมศรี: the woman in the blue dress",
    }
    await expect(page.locator("#results")).to_be_visible(timeout=60_000)
    assert job_id_of(page) != first_job
    job = await until_ended(tab.base, job_id_of(page))
    assert job["again_of"] == first_job and job["status"] == "succeeded"
    assert "350 to 450 words" in openai.requests[asked].text
    assert len(tab.submissions()) == 1  # no second upload
    await tab.shot("steer-2-another")


async def test_the_length_and_names_fit_a_360px_phone(new_tab):
    tab = await new_tab(width=360, height=740)
    page = tab.page
    for _ in range(3):
        await page.get_by_role("button", name="+ Add a name").click()
    await page.get_by_label("Who is name 3").fill("a very long description of who is in the photo")
    await expect(page.get_by_role("radio", name="Long")).to_be_visible()
    assert await tab.scroll_width() <= 360
    await page.get_by_role("button", name="Remove name 2").click()
    await expect(page.locator("#cast li")).to_have_count(2)
    await expect(page.get_by_label("Who is name 2")).to_have_value(
        "a very long description of who is in the photo"
    )
    await tab.shot("phone-steer")
