// The big notice under the progress card: why a story could not be written, that it was
// cancelled, or that its link leads nowhere now.

import { $, scrollBehavior } from "./dom.js";
import { plural } from "./limits.js";

const box = $("#error");
const ERROR_TITLES = {
  0: "Could not reach ImgStory",
  400: "The upload was not accepted",
  401: "An API key is needed",
  404: "This story is not here",
  408: "The upload was too slow",
  413: "The upload is too large",
  422: "This media could not be used",
  429: "Too many requests right now",
  500: "Something went wrong on our side",
  503: "The story service is unavailable right now",
};

export function hideError() {
  box.hidden = true;
}

function show(title, text, tone) {
  $("#error-title").textContent = title;
  $("#error-detail").textContent = text;
  box.classList.toggle("notice--neutral", tone === "neutral");
  box.hidden = false;
  box.scrollIntoView({ block: "nearest", behavior: scrollBehavior() });
}

/** Show the error box: a title for `status`, and the server's words. */
export function showProblem(status, detail, retryAfter) {
  const title = ERROR_TITLES[status] || `Error ${status}`;
  let text = detail;
  if (retryAfter && /^\d+$/.test(retryAfter)) {
    text += ` Try again in ${plural(Number(retryAfter), "second")}.`;
  }
  show(status ? `${title} (HTTP ${status})` : title, text, "error");
}

/** A story that ended without being finished, though nothing went wrong (cancelled). */
export function showNotice(title, text) {
  show(title, text, "neutral");
}
