// ImgStory page: pick or drop media, check it here first, then submit it as a job (POST /jobs)
// and show the upload percentage, the server's stages, the English story as it is written,
// its Thai translation paragraph by paragraph, and the result. The job is in the address
// (`/#job=<id>`): a reload, a bookmark or a shared link shows its progress, then its story.
// This entry module wires the page's controls to the modules that do the work:
// limits.js (the checks), selection.js (the chosen files), controls.js (prompt, presets, busy),
// steering.js (length and cast),
// request.js (the upload), follow.js (the job's events), address.js (the job in the address),
// progress.js (the stages), results.js (the stories), notices.js (errors).

import { clearAddress, jobInAddress, jobLink } from "./address.js";
import { $, copyText, scrollBehavior } from "./dom.js";
import { clearPrompt, isBusy, syncPrompt, wirePresets } from "./controls.js";
import { nudge, openJob, shownJob, shownWhat, stopFollowing } from "./follow.js";
import { LIMITS, showLimits } from "./limits.js";
import { hideError } from "./notices.js";
import { announce, closeProgress } from "./progress.js";
import { cancelRequest, send, uploading } from "./request.js";
import { clearResult, copyStory, download } from "./results.js";
import { addFiles, clearSelection, selectedItems, showFileProblems } from "./selection.js";
import { addSteering, castProblems, clearSteering, steeringBody, wireSteering } from "./steering.js";

const form = $("#story-form");
const fileInput = $("#files");
const dropzone = $("#dropzone");
const prompt = $("#prompt");

showLimits();

// ---- choosing files -------------------------------------------------------------------

fileInput.addEventListener("change", () => {
  addFiles([...fileInput.files]);
  fileInput.value = ""; // so choosing the same file again fires change again
});

dropzone.addEventListener("click", (event) => {
  if (!event.target.closest("label, input, button, a") && !isBusy()) fileInput.click();
});

// Files may be dropped anywhere on the page; the drop zone lights up while they hover.
let dragDepth = 0;
const carriesFiles = (event) => [...(event.dataTransfer?.types || [])].includes("Files");
window.addEventListener("dragenter", (event) => {
  if (!carriesFiles(event)) return;
  event.preventDefault();
  dragDepth += 1;
  dropzone.classList.add("is-over");
});
window.addEventListener("dragover", (event) => {
  if (!carriesFiles(event)) return;
  event.preventDefault();
  event.dataTransfer.dropEffect = isBusy() ? "none" : "copy";
});
window.addEventListener("dragleave", () => {
  dragDepth = Math.max(0, dragDepth - 1);
  if (!dragDepth) dropzone.classList.remove("is-over");
});
window.addEventListener("drop", (event) => {
  if (!carriesFiles(event)) return;
  event.preventDefault();
  dragDepth = 0;
  dropzone.classList.remove("is-over");
  addFiles([...event.dataTransfer.files]);
});
document.addEventListener("paste", (event) => {
  const files = [...(event.clipboardData?.files || [])];
  if (!files.length) return;
  event.preventDefault();
  addFiles(files);
});

// ---- the prompt and sending ------------------------------------------------------------

wirePresets();
wireSteering();

form.addEventListener("submit", (event) => {
  event.preventDefault();
  if (isBusy()) return;
  const items = selectedItems();
  if (!items.length) {
    showFileProblems(["Add at least one photo or a video first."]);
    fileInput.focus();
    return;
  }
  const text = prompt.value.trim();
  if (text.length > LIMITS.maxPrompt) {
    showFileProblems([`The style text is ${text.length} characters long; at most ${LIMITS.maxPrompt} are allowed.`]);
    prompt.focus();
    return;
  }
  const problems = castProblems();
  if (problems.length) {
    showFileProblems(problems);
    $("#cast input")?.focus();
    return;
  }
  const data = new FormData();
  for (const item of items) data.append("files", item.file, item.file.name);
  if (text) data.append("prompt", text);
  addSteering(data);
  send(data, { isVideo: items[0].kind === "video", photos: items.length });
});

$("#cancel").addEventListener("click", cancelRequest);

// Another take of the story shown: the same media, with the style, length and names set now.
$("#write-another").addEventListener("click", () => {
  const jobId = shownJob();
  if (isBusy() || !jobId) return;
  const text = prompt.value.trim();
  const problems = castProblems();
  if (text.length > LIMITS.maxPrompt) {
    problems.push(`The style text is ${text.length} characters long; at most ${LIMITS.maxPrompt} are allowed.`);
  }
  if (problems.length) {
    showFileProblems(problems);
    return;
  }
  stopFollowing();
  send(null, shownWhat() || { isVideo: false, photos: 1 }, { jobId, body: steeringBody(text) });
});

// ---- the job in the address ------------------------------------------------------------

/** Show the job the address names (Back, Forward, a pasted link), or the bare form. */
function showAddressedJob() {
  const id = jobInAddress();
  if (uploading() || (id && id === shownJob())) return;
  stopFollowing();
  closeProgress();
  clearResult();
  hideError();
  if (id) openJob(id);
}
window.addEventListener("hashchange", showAddressedJob);

const copyLink = $("#copy-link");
copyLink.addEventListener("click", async () => {
  try {
    await copyText(jobLink());
    copyLink.textContent = "Link copied ✓";
    announce("The link to this story is copied.");
  } catch {
    copyLink.textContent = "Copy failed";
    announce("Could not copy the link; copy the page's address instead.");
  }
  setTimeout(() => { copyLink.textContent = "Copy link"; }, 2000);
});

// A phone that wakes up, or a network that comes back: the job's events are read again now.
window.addEventListener("online", nudge);
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible") nudge();
});

// ---- results --------------------------------------------------------------------------

for (const button of document.querySelectorAll("[data-copy]")) {
  button.addEventListener("click", () => copyStory(button));
}
$("#download-txt").addEventListener("click", () => download("txt"));
$("#download-md").addEventListener("click", () => download("md"));
$("#again").addEventListener("click", () => {
  stopFollowing();
  clearAddress();
  clearSelection();
  clearPrompt();
  clearSteering();
  clearResult();
  hideError();
  window.scrollTo({ top: 0, behavior: scrollBehavior() });
  fileInput.focus({ preventScroll: true });
});

syncPrompt();
if (jobInAddress()) showAddressedJob();
