// Following a job until it ends: its events from GET /jobs/{id}/events, read with fetch()
// (EventSource cannot send an API key), and resumed after a dropped connection with
// Last-Event-ID, so nothing is shown twice. A job opened from its address is read first
// with GET /jobs/{id}: a finished one is shown at once, an unfinished one followed.
// The job is the server's: leaving the page, or following another, does not stop it.

import { askForKey, forgetKey, keyNeeded, storedKey } from "./apikey.js";
import { $ } from "./dom.js";
import { setBusy } from "./controls.js";
import { hideError, showNotice, showProblem } from "./notices.js";
import {
  addStoryText, addThaiText, announce, closeProgress, failStages, finishStages, openProgress,
  restartProgress, setStage, showLeaveNote, waitingInLine,
} from "./progress.js";
import { clearResult, showResult } from "./results.js";
import { EventStreamParser } from "./sse.js";

const FINISHED = new Set(["succeeded", "failed", "canceled"]);
// Nothing heard for this long: the connection may have died unnoticed (a phone asleep, a
// proxy); it is opened again from the last event, which costs nothing if it was alive.
const SILENCE_MS = 45_000;
const RETRY_MS = [500, 1000, 2000, 4000, 8000, 15000];
const connection = $("#connection");

let run = null; // the job shown now: {id, what, key, lastId, attempt, heard, over, ...}

/** The id of the job this page shows (running or ended), or null. */
export function shownJob() {
  return run ? run.id : null;
}

/** What the job shown was made from, {isVideo, photos}, for another take of it. */
export function shownWhat() {
  return run ? run.what : null;
}

function live(current) {
  return run === current && !current.over;
}

function newRun(id, what, key) {
  stopFollowing();
  run = {
    id, what, key, lastId: "", attempt: 0, heard: false, over: false, settling: false,
    controller: null, silence: null, wake: null, canceling: false,
    again: null, // where to ask for another take, while the server keeps the media
  };
  return run;
}

/** Stop following the job shown (it goes on on the server); the form is free again. */
export function stopFollowing() {
  if (!run || run.over) return;
  end(run);
}

/**
 * The run is over. Its stream is cut, unless the job's end came in it (`drained`): then the
 * server ends it just after, and reading it to its end leaves a whole response, not a broken one.
 */
function end(current, drained = false) {
  current.over = true;
  if (!drained) {
    clearTimeout(current.silence);
    current.controller?.abort();
  }
  current.wake?.();
  connection.hidden = true;
  if (run === current) setBusy(false);
}

const path = (current, tail = "") => `/jobs/${encodeURIComponent(current.id)}${tail}`;

function headers(current, extra = {}) {
  const all = { ...extra };
  if (current.key) all.Authorization = `Bearer ${current.key}`;
  return all;
}

async function detailOf(response, fallback) {
  try {
    const body = await response.json();
    if (body && typeof body.detail === "string") return body.detail;
  } catch {
    // not JSON
  }
  return fallback || response.statusText || `HTTP ${response.status}`;
}

/** Follow the job `job` (the 202 answer) just submitted from this page. */
export function follow(job, what, key) {
  const current = newRun(job.id, what, key);
  current.again = job.urls?.again || null;
  setBusy(true);
  showLeaveNote(job.expires_at);
  if (job.status === "queued") waitingInLine();
  listen(current);
}

/** Show the job the address names: its story if it ended, else its progress as it goes. */
export async function openJob(id) {
  const current = newRun(id, null, storedKey());
  clearResult();
  hideError();
  setBusy(true);
  if (!current.key && keyNeeded()) {
    current.key = await askForKey("This story was written with an API key. Enter that key to see it.");
    if (!live(current)) return;
    if (!current.key) {
      end(current);
      showProblem(401, "This ImgStory server needs the API key the story was written with.");
      return;
    }
  }
  openProgress(null, true);
  const job = await readJob(current);
  if (!job || !live(current)) return;
  current.again = job.urls?.again || null;
  if (FINISHED.has(job.status)) {
    showEnded(current, job);
    return;
  }
  showLeaveNote(job.expires_at);
  if (job.status === "queued") waitingInLine();
  listen(current);
}

/** GET the job, trying again while the server cannot be reached; null once the run is over. */
async function readJob(current) {
  for (let failures = 0; ; failures += 1) {
    let response = null;
    try {
      response = await fetch(path(current), { headers: headers(current), cache: "no-store" });
    } catch {
      // unreachable: try again below
    }
    if (!live(current)) return null;
    if (response?.ok) {
      connection.hidden = true;
      try {
        return await response.json();
      } catch {
        // cut short: try again
      }
    } else if (response?.status === 404) {
      notFound(current);
      return null;
    } else if (response?.status === 401) {
      if (!(await keyRefused(current, await detailOf(response)))) return null;
      continue;
    } else if (response && refusedForGood(response)) {
      await refused(current, response);
      return null;
    }
    await troubled(current, failures);
    if (!live(current)) return null;
  }
}

/** A client error that asking again will not mend (unlike 408 and 429). */
function refusedForGood(response) {
  return response.status >= 400 && response.status < 500 && ![408, 429].includes(response.status);
}

async function refused(current, response) {
  const detail = await detailOf(response);
  end(current);
  closeProgress();
  showProblem(response.status, detail);
}

/** Read the job's events until it ends, opening the stream again whenever it drops. */
async function listen(current) {
  let failures = 0;
  let quiet = 0;
  while (live(current) && !current.settling) {
    const outcome = await readEvents(current);
    if (!live(current) || current.settling) return;
    if (outcome === "heard") {
      failures = 0; // it was working: open it again at once, from the last event
      quiet = 0;
    } else if (outcome === "quiet") {
      await pause(current, RETRY_MS[Math.min(quiet, RETRY_MS.length - 1)]); // open, said nothing
      quiet += 1;
    } else {
      await troubled(current, failures);
      failures += 1;
    }
  }
}

/** One connection to the event stream: "heard" events, stayed "quiet", or "failed". */
async function readEvents(current) {
  const controller = new AbortController();
  current.controller = controller;
  const extra = { Accept: "text/event-stream" };
  if (current.lastId) extra["Last-Event-ID"] = current.lastId;
  let response;
  try {
    response = await fetch(path(current, "/events"), {
      headers: headers(current, extra), cache: "no-store", signal: controller.signal,
    });
  } catch {
    return "failed";
  }
  if (!live(current)) return "failed";
  if (response.status === 404) {
    notFound(current);
  } else if (response.status === 401) {
    await keyRefused(current, await detailOf(response));
  } else if (refusedForGood(response)) {
    await refused(current, response);
  }
  if (!response.ok || !(response.headers.get("Content-Type") || "").includes("text/event-stream")) {
    response.body?.cancel().catch(() => {});
    return "failed"; // busy or failing for now (5xx, 429): try again shortly
  }
  const before = current.lastId;
  connection.hidden = true;
  const parser = new EventStreamParser((name, data, id) => heard(current, name, data, id), current.lastId);
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  const watch = () => {
    clearTimeout(current.silence);
    current.silence = setTimeout(() => controller.abort(), SILENCE_MS);
  };
  current.lastByte = Date.now();
  watch();
  try {
    for (;;) {
      const { value, done } = await reader.read(); // once over, read to the end, unheard
      if (done) break;
      current.lastByte = Date.now();
      watch();
      parser.feed(decoder.decode(value, { stream: true }));
    }
  } catch {
    // dropped, or aborted (silence, or the run stopped): the caller decides
  } finally {
    clearTimeout(current.silence);
  }
  return current.lastId !== before ? "heard" : "quiet";
}

/** Say the connection is lost and wait before trying again. */
async function troubled(current, failures) {
  if (failures > 0) {
    connection.hidden = false;
    if (failures === 1) announce(connection.textContent);
  }
  await pause(current, RETRY_MS[Math.min(failures, RETRY_MS.length - 1)]);
}

/** Wait `ms`, or less if the network returns or the page is seen again (see nudge). */
async function pause(current, ms) {
  await new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    current.wake = () => {
      clearTimeout(timer);
      resolve();
    };
  });
  current.wake = null;
}

/** The network is back, or the page is seen again (a phone woke up): reconnect now. */
export function nudge() {
  if (!run || run.over) return;
  if (run.wake) run.wake();
  else if (run.controller && Date.now() - (run.lastByte || 0) > 10_000) run.controller.abort();
}

/** The key was refused: ask for it again; whether to go on. */
async function keyRefused(current, detail) {
  forgetKey();
  const key = await askForKey(current.key
    ? "The server did not accept that key. Check it and enter it again."
    : "This ImgStory server needs the API key the story was written with.");
  if (!live(current)) return false;
  if (!key) {
    end(current);
    closeProgress();
    showProblem(401, detail);
    return false;
  }
  current.key = key;
  return true;
}

/** One event of the stream, in order; `id` is what a reconnection resumes after. */
function heard(current, name, data, id) {
  if (!live(current) || current.settling) return;
  current.lastId = id;
  current.heard = true;
  let payload;
  try {
    payload = JSON.parse(data);
  } catch {
    return;
  }
  try {
    onEvent(current, name, payload);
  } catch (error) {
    setTimeout(() => { throw error; }); // reported, without losing the events after it
  }
}

function onEvent(current, name, payload) {
  switch (name) {
    case "status":
      onStatus(current, payload);
      break;
    case "stage":
      setStage(payload.stage, payload.detail);
      break;
    case "story":
      addStoryText(payload.text || "");
      break;
    case "thai":
      addThaiText(payload.text || "");
      break;
    case "result":
      showEnded(current, { status: "succeeded", result: payload }, true);
      break;
    case "error":
      showEnded(current, { status: "failed", error: payload }, true);
      break;
    default:
      break;
  }
}

function onStatus(current, { status, attempts }) {
  if (status === "queued") {
    waitingInLine();
  } else if (status === "running") {
    const attempt = Number(attempts) || 0;
    if (current.attempt && attempt > current.attempt) restartProgress(attempt);
    current.attempt = Math.max(current.attempt, attempt);
  } else if (status === "canceled") {
    showEnded(current, { status }, true);
  } else if (FINISHED.has(status)) {
    settleFromJob(current); // ended without its result or error event: the job has it
  }
}

async function settleFromJob(current) {
  current.settling = true;
  current.controller?.abort();
  const job = await readJob(current);
  if (job && live(current)) showEnded(current, job);
}

/** The job ended: show its story, its error, or that it was cancelled (said `inStream`?). */
function showEnded(current, job, inStream = false) {
  end(current, inStream);
  if (!current.what && job.media) {
    current.what = { isVideo: job.media.kind === "video", photos: job.media.files };
  }
  // Another take is offered while the server keeps the photos or video.
  $("#write-another").hidden = !(job.urls ? job.urls.again : current.again);
  if (job.status === "succeeded" && job.result) {
    finishStages();
    showResult(job.result, current.what?.photos);
  } else if (job.status === "canceled") {
    closeProgress();
    announce("Cancelled.");
    showNotice(
      "This story was cancelled",
      "It was stopped before it was finished, and nothing more will be written. You can write a new one above.",
    );
  } else {
    if (current.heard) failStages();
    else closeProgress(); // opened from its address: only the outcome is known
    showProblem(job.error?.status || 500, job.error?.detail || "The story could not be finished.");
  }
}

function notFound(current) {
  end(current);
  closeProgress();
  showProblem(404, "This link leads to no story now: it may be mistyped, or the story has "
    + `expired or been deleted${keyNeeded() ? ", or it belongs to another API key" : ""}. `
    + "Add photos or a video above to write a new one.");
}

/** Cancel the job followed: its model calls stop at once. */
export async function cancelJob() {
  const current = run;
  if (!current || !live(current) || current.canceling) return;
  current.canceling = true;
  const button = $("#cancel");
  button.disabled = true;
  announce("Cancelling…");
  try {
    const response = await fetch(path(current, "/cancel"), { method: "POST", headers: headers(current) });
    if (!live(current)) return;
    if (response.ok) {
      showEnded(current, await response.json());
      $("#submit").focus();
    } else if (response.status === 404) {
      notFound(current);
    } else if (response.status !== 409) { // 409: it ended first, and its end is on its way
      announce(`The story could not be cancelled: ${await detailOf(response)}`);
    }
  } catch {
    announce("ImgStory could not be reached to cancel the story; try again.");
  } finally {
    current.canceling = false;
    button.disabled = false;
  }
}
