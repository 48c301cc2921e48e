// The job in the page's address (`/#job=<id>`), so a reload, a bookmark or a shared link
// comes back to the story. In the fragment, the id (with keys off, all it takes to read the
// story) is never sent to the server in the page's own request, nor in a Referer.

// The server checks the id; this only keeps odd text out of the requests.
const JOB = /^[A-Za-z0-9_-]{1,64}$/;

/** The job id the address names, or null. */
export function jobInAddress() {
  const id = new URLSearchParams(window.location.hash.slice(1)).get("job");
  return id && JOB.test(id) ? id : null;
}

/** A new story: its address is a new entry in the history (Back returns to the form). */
export function putJobInAddress(id) {
  if (jobInAddress() !== id) window.history.pushState(null, "", `#job=${id}`);
}

/** The address of this page and job, to keep or to share. */
export function jobLink() {
  return window.location.href;
}

export function clearAddress() {
  if (window.location.hash) {
    window.history.replaceState(null, "", window.location.pathname + window.location.search);
  }
}
