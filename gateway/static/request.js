// Send the form as a job (POST /jobs), then follow it (follow.js) at its own address.
// XMLHttpRequest rather than fetch: only XHR reports upload progress.
// When the server wants an API key, it is asked for before sending (apikey.js) and sent
// as a Bearer token; a 401 asks for it again and sends the same form once more.

import { askForKey, forgetKey, keyNeeded, storedKey } from "./apikey.js";
import { putJobInAddress } from "./address.js";
import { $ } from "./dom.js";
import { setBusy } from "./controls.js";
import { cancelJob, follow, stopFollowing } from "./follow.js";
import { hideError, showProblem } from "./notices.js";
import { announce, closeProgress, failStages, openProgress, showUploaded, uploadSent } from "./progress.js";
import { clearResult } from "./results.js";
import { showFileProblems } from "./selection.js";

let request = null; // the upload in flight
let run = null; // what one upload has seen so far

/** Cancel the story: the upload if it is still going, else the job. */
export function cancelRequest() {
  if (request) request.abort();
  else cancelJob();
}

/** Whether an upload is going on. */
export function uploading() {
  return request !== null;
}

const NO_KEY = "This ImgStory server needs an API key to write stories. Ask whoever runs it for one.";

/**
 * Send the form `data` as a new job; `what` is {isVideo, photos}, for the stages and the
 * result. With `again` ({jobId, body}), ask instead for another take of that job: the
 * same photos or video, none uploaded, with the JSON `body`'s prompt, length and cast.
 */
export async function send(data, what, again = null) {
  showFileProblems([]);
  hideError();
  stopFollowing(); // a story shown before goes on on the server, at its own address
  let key = storedKey();
  if (!key && keyNeeded()) {
    key = await askForKey("This ImgStory server asks for a key before it writes a story.");
    if (!key) {
      showProblem(401, NO_KEY);
      return;
    }
  }
  clearResult();
  const current = { data, what, key, again, closed: false };
  run = current;
  setBusy(true);
  openProgress(what.isVideo);

  const xhr = new XMLHttpRequest();
  request = xhr;
  // Events of an upload that has already ended (answered, failed, cancelled) change nothing.
  const guarded = (handler) => (event) => {
    if (run === current && !current.closed) handler(event);
  };
  xhr.open("POST", again ? `/jobs/${encodeURIComponent(again.jobId)}/again` : "/jobs");
  xhr.setRequestHeader("Accept", "application/json");
  if (again) xhr.setRequestHeader("Content-Type", "application/json");
  if (key) xhr.setRequestHeader("Authorization", `Bearer ${key}`);
  xhr.upload.addEventListener("progress", guarded((event) => {
    if (event.lengthComputable) showUploaded(event.loaded, event.total);
  }));
  xhr.upload.addEventListener("load", guarded(uploadSent));
  xhr.addEventListener("load", guarded(() => done(xhr)));
  xhr.addEventListener("error", guarded(() => {
    fail(0, "The connection to the server failed. Check that ImgStory is running and try again.");
  }));
  xhr.addEventListener("abort", guarded(() => {
    closeProgress();
    announce("Cancelled.");
    settle();
    setBusy(false);
    $("#submit").focus();
  }));
  xhr.send(again ? JSON.stringify(again.body) : data);
}

/** The upload is over (answered, failed or cancelled). */
function settle() {
  run.closed = true;
  request = null;
}

function done(xhr) {
  const current = run;
  settle();
  if (xhr.status === 202) {
    let job = null;
    try {
      job = JSON.parse(xhr.responseText);
    } catch {
      // not JSON: said below
    }
    if (job && typeof job.id === "string") {
      putJobInAddress(job.id);
      follow(job, current.what, current.key);
    } else {
      fail(500, "The server took the story but did not say where to find it.");
    }
    return;
  }
  closeProgress(); // refused before any work began: the error alone says it all
  let detail = xhr.statusText || "The server refused the request.";
  try {
    const body = JSON.parse(xhr.responseText);
    if (body && typeof body.detail === "string") detail = body.detail;
  } catch {
    // not JSON: keep the status text
  }
  if (xhr.status === 401 && /^Bearer/i.test(xhr.getResponseHeader("WWW-Authenticate") || "")) {
    askAgain(current, detail);
  } else {
    fail(xhr.status, detail, xhr.getResponseHeader("Retry-After"));
  }
}

/** The server wants a (different) key: ask for one and send the same form again. */
async function askAgain(current, detail) {
  forgetKey();
  const key = await askForKey(
    current.key ? "The server did not accept that key. Check it and enter it again." : NO_KEY,
  );
  if (run !== current) return;
  if (!key) {
    fail(401, detail);
    return;
  }
  send(current.data, current.what, current.again);
}

function fail(status, detail, retryAfter) {
  settle();
  setBusy(false);
  failStages();
  showProblem(status, detail, retryAfter);
}
