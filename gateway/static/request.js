// POST /analyze/stream and read its Server-Sent Events as they arrive.
// XMLHttpRequest rather than fetch: only XHR reports upload progress.
// When the server wants an API key, it is asked for before sending (apikey.js) and sent
// as a Bearer token; a 401 asks for it again and sends the same form once more.

import { askForKey, forgetKey, keyNeeded, storedKey } from "./apikey.js";
import { $, scrollBehavior } from "./dom.js";
import { setBusy } from "./controls.js";
import { plural } from "./limits.js";
import {
  addStoryText, addThaiText, announce, closeProgress, failStages, finishStages, openProgress,
  setStage, showUploaded, uploadSent,
} from "./progress.js";
import { clearResult, showResult } from "./results.js";
import { showFileProblems } from "./selection.js";

const errorBox = $("#error");
const ERROR_TITLES = {
  0: "Could not reach ImgStory",
  400: "The upload was not accepted",
  401: "An API key is needed",
  408: "The upload was too slow",
  413: "The upload is too large",
  422: "This media could not be used",
  429: "Too many requests right now",
  500: "Something went wrong on our side",
  503: "The story service is unavailable right now",
};

let request = null; // the XMLHttpRequest in flight
let run = null; // what one request has seen so far

export function cancelRequest() {
  request?.abort();
}

export function hideError() {
  errorBox.hidden = true;
}

const NO_KEY = "This ImgStory server needs an API key to write stories. Ask whoever runs it for one.";

/** Send the form `data`; `what` is {isVideo, photos}, for the stages and the result. */
export async function send(data, what) {
  showFileProblems([]);
  hideError();
  let key = storedKey();
  if (!key && keyNeeded()) {
    key = await askForKey("This ImgStory server asks for a key before it writes a story.");
    if (!key) {
      showProblem(401, NO_KEY);
      return;
    }
  }
  clearResult();
  const current = { data, what, key, parsed: 0, result: false, failed: false, closed: false };
  run = current;
  setBusy(true);
  openProgress(what.isVideo);

  const xhr = new XMLHttpRequest();
  request = xhr;
  // Events of a run that has already ended (result, error, cancel) change nothing.
  const guarded = (handler) => (event) => {
    if (run === current && !current.closed) handler(event);
  };
  xhr.open("POST", "/analyze/stream");
  xhr.setRequestHeader("Accept", "text/event-stream");
  if (key) xhr.setRequestHeader("Authorization", `Bearer ${key}`);
  xhr.upload.addEventListener("progress", guarded((event) => {
    if (event.lengthComputable) showUploaded(event.loaded, event.total);
  }));
  xhr.upload.addEventListener("load", guarded(uploadSent));
  xhr.addEventListener("progress", guarded(() => readEvents(xhr)));
  xhr.addEventListener("load", guarded(() => {
    readEvents(xhr);
    if (!current.closed) done(xhr);
  }));
  xhr.addEventListener("error", guarded(() => {
    fail(0, "The connection to the server failed. Check that ImgStory is running and try again.");
  }));
  xhr.addEventListener("abort", guarded(() => {
    closeProgress();
    announce("Cancelled.");
    settle();
    $("#submit").focus();
  }));
  xhr.send(data);
}

/** The run is over (result, error or cancel): the form is usable again. */
function settle() {
  run.closed = true;
  request = null;
  setBusy(false);
}

function isEventStream(xhr) {
  return xhr.status === 200 && (xhr.getResponseHeader("Content-Type") || "").includes("text/event-stream");
}

/** Parse the complete Server-Sent Events that have arrived since the last call. */
function readEvents(xhr) {
  if (xhr.readyState < 3 || !isEventStream(xhr)) return;
  const current = run;
  // Normalising CR LF and CR to LF keeps every earlier offset valid as more text arrives.
  const text = xhr.responseText.replace(/\r\n?/g, "\n");
  let end;
  while (!current.closed && (end = text.indexOf("\n\n", current.parsed)) !== -1) {
    const block = text.slice(current.parsed, end);
    current.parsed = end + 2;
    dispatch(block);
  }
}

function dispatch(block) {
  let event = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") event = value;
    else if (field === "data") data.push(value);
  }
  if (!data.length) return;
  let payload;
  try {
    payload = JSON.parse(data.join("\n"));
  } catch {
    return;
  }
  onEvent(event, payload);
}

function onEvent(event, payload) {
  if (run.closed) return;
  switch (event) {
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
      run.result = true;
      settle();
      finishStages();
      showResult(payload, run.what.photos);
      break;
    case "error":
      fail(payload.status || 500, payload.detail || "The server reported an error.");
      break;
    default:
      break;
  }
}

function done(xhr) {
  if (xhr.status !== 200) {
    closeProgress(); // refused before any work began: the error alone says it all
    let detail = xhr.statusText || "The server refused the request.";
    try {
      const body = JSON.parse(xhr.responseText);
      if (body && typeof body.detail === "string") detail = body.detail;
    } catch {
      // not JSON: keep the status text
    }
    if (xhr.status === 401 && /^Bearer/i.test(xhr.getResponseHeader("WWW-Authenticate") || "")) {
      askAgain(detail);
    } else {
      fail(xhr.status, detail, xhr.getResponseHeader("Retry-After"));
    }
  } else if (!isEventStream(xhr)) {
    fail(500, "The server answered with something other than an event stream.");
  } else if (!run.result && !run.failed) {
    fail(0, "The connection closed before the story was finished. Please try again.");
  }
}

/** The server wants a (different) key: ask for one and send the same form again. */
async function askAgain(detail) {
  const current = run;
  forgetKey();
  const key = await askForKey(
    current.key ? "The server did not accept that key. Check it and enter it again." : NO_KEY,
  );
  if (run !== current || current.closed) return;
  if (!key) {
    fail(401, detail);
    return;
  }
  settle();
  send(current.data, current.what);
}

function fail(status, detail, retryAfter) {
  if (run.failed || run.closed) return;
  run.failed = true;
  settle();
  failStages();
  showProblem(status, detail, retryAfter);
}

/** Show the error box: a title for `status`, and the server's words. */
function showProblem(status, detail, retryAfter) {
  const title = ERROR_TITLES[status] || `Error ${status}`;
  $("#error-title").textContent = status ? `${title} (HTTP ${status})` : title;
  let text = detail;
  if (retryAfter && /^\d+$/.test(retryAfter)) {
    text += ` Try again in ${plural(Number(retryAfter), "second")}.`;
  }
  $("#error-detail").textContent = text;
  errorBox.hidden = false;
  errorBox.scrollIntoView({ block: "nearest", behavior: scrollBehavior() });
}
