// The progress card: the stages as the server reports them, the upload bar, the story so far
// in English and in Thai, the note that the person may leave and come back, and the status
// line that screen readers hear.

import { keyNeeded } from "./apikey.js";
import { $, scrollBehavior } from "./dom.js";
import { formatBytes } from "./limits.js";
import { hasTitle, renderStory, thaiHasTitle } from "./story.js";

const progress = $("#progress");
const stageItems = [...document.querySelectorAll("#stages .stage")];
const STAGES = stageItems.map((item) => item.dataset.stage);
const uploadBar = $("#upload-bar");
const live = $("#live");
const liveText = $("#live-text");
const liveThai = $("#live-thai");
const thaiWaiting = $("#live-thai-waiting");
const leaveNote = $("#leave-note");

// What the current run has shown; reset for each run by openProgress().
let stageIndex = -1;
let story = "";
let thai = "";
let lastAnnounced = -1;
let video = null; // true, false, or null when not known (a job opened from its address)

export function announce(text) {
  $("#status").textContent = text;
}

function setTitle(text) {
  $("#progress-title").textContent = text;
}

function part(item, name) {
  return item.querySelector(`.stage__${name}`);
}

function resetStages() {
  stageIndex = -1;
  story = "";
  thai = "";
  lastAnnounced = -1;
  for (const item of stageItems) {
    item.classList.remove("is-active", "is-done", "is-skipped", "is-failed");
    part(item, "detail").textContent = "";
    part(item, "state").textContent = ", waiting";
    if ("videoOnly" in item.dataset) item.hidden = !video;
  }
  uploadBar.hidden = false;
  uploadBar.value = 0;
  setTitle("Working on your story");
  live.hidden = true;
  liveText.textContent = "";
  liveThai.textContent = "";
  thaiWaiting.hidden = false;
}

/**
 * Show the card for a new run, at its first stage: the upload about to start, or, for a
 * job opened from its address (`uploaded`), done already. `isVideo` is null when unknown.
 */
export function openProgress(isVideo, uploaded = false) {
  video = isVideo;
  resetStages();
  leaveNote.hidden = true;
  progress.hidden = false;
  if (uploaded) {
    uploadBar.hidden = true;
    setStage("uploading", "Uploaded");
  } else {
    setStage("uploading", "Starting the upload…");
  }
  progress.scrollIntoView({ block: "start", behavior: scrollBehavior() });
}

export function closeProgress() {
  progress.hidden = true;
}

/** The job is accepted: the person may leave, and come back to this address until `expiresAt`. */
export function showLeaveNote(expiresAt) {
  const until = new Date(expiresAt);
  $("#leave-until").textContent = Number.isNaN(until.getTime()) ? "" : ` until ${until.toLocaleString(
    undefined, { weekday: "short", day: "numeric", month: "short", hour: "2-digit", minute: "2-digit" })}`;
  $("#leave-key").hidden = !keyNeeded(); // the key is kept for this tab only
  leaveNote.hidden = false;
}

/** The job waits for a free worker: say so at the upload, which is done. */
export function waitingInLine() {
  if (stageIndex > 0) return;
  uploadBar.hidden = true;
  uploadDetail().textContent = "Uploaded; waiting for its turn…";
  announce("Uploaded; waiting for its turn.");
}

/** The job is run again from the start (the server running it was lost): so is the story. */
export function restartProgress(attempt) {
  resetStages();
  uploadBar.hidden = true;
  setStage("uploading", "Starting again");
  setTitle("Working on your story (started again)");
  announce(`The server writing your story stopped; another one starts it again (attempt ${attempt}).`);
}

/** Translation starts on the first finished paragraph: the story goes on being written. */
function writesOnWhile(item, stage) {
  return stage === "translating" && item.dataset.stage === "writing_story"
    && item.classList.contains("is-active") && story !== "";
}

function showLiveTitle() {
  const writing = stageItems[STAGES.indexOf("writing_story")];
  const written = stageIndex > STAGES.indexOf("writing_story") && !writing.classList.contains("is-active");
  $("#live-title").textContent = written ? "The English story" : "The story so far";
}

/**
 * Make `stage` the current one: earlier stages are done (or skipped), later ones wait. The
 * story being written stays in progress when the translation begins alongside it.
 */
export function setStage(stage, detail) {
  const index = STAGES.indexOf(stage);
  if (index < 0) {
    if (detail) announce(detail);
    return;
  }
  if (index < stageIndex) return; // never go backwards
  if (stageItems[index].hidden) stageItems[index].hidden = false; // a video not known as one
  stageItems.forEach((item, i) => {
    if (i < index && !writesOnWhile(item, stage)) {
      const reached = item.classList.contains("is-active") || item.classList.contains("is-done");
      item.classList.remove("is-active");
      item.classList.add(reached ? "is-done" : "is-skipped");
      part(item, "state").textContent = reached ? ", done" : ", skipped";
      if (!reached && "videoOnly" in item.dataset) part(item, "detail").textContent = "Not needed";
    }
  });
  if (index > 0) uploadBar.hidden = true;
  const item = stageItems[index];
  item.classList.add("is-active");
  part(item, "state").textContent = ", in progress";
  const name = part(item, "name").textContent;
  // The server's detail often repeats the stage's name; show it only when it says more.
  if (detail && detail.toLowerCase() !== name.toLowerCase()) {
    part(item, "detail").textContent = detail;
  }
  if (index !== stageIndex || detail) {
    announce(detail && detail.toLowerCase() !== name.toLowerCase() ? `${name}: ${detail}` : name);
  }
  stageIndex = index;
  showLiveTitle();
}

function uploadDetail() {
  return part(stageItems[STAGES.indexOf("uploading")], "detail");
}

export function showUploaded(loaded, total) {
  const percent = Math.min(100, Math.floor((loaded / total) * 100));
  uploadBar.value = percent;
  uploadDetail().textContent = `${percent} % of ${formatBytes(total)}`;
  // Screen readers hear every 25 %, not every event.
  const step = Math.floor(percent / 25);
  if (step !== lastAnnounced) {
    lastAnnounced = step;
    announce(`Uploading: ${percent} %`);
  }
}

export function uploadSent() {
  uploadBar.value = 100;
  if (stageIndex <= 0) uploadDetail().textContent = "Uploaded, waiting for the server…";
}

/** More of the English story has been written: show it as it grows. */
export function addStoryText(text) {
  if (stageIndex < STAGES.indexOf("writing_story")) setStage("writing_story", "");
  story += text;
  live.hidden = false;
  renderStory(liveText, story, hasTitle(story));
  liveText.scrollTop = liveText.scrollHeight;
}

/** More of the Thai translation is in (a paragraph at a time): show it beside the English. */
export function addThaiText(text) {
  if (stageIndex < STAGES.indexOf("translating")) setStage("translating", "");
  thai += text;
  if (!thai.trim()) return;
  live.hidden = false;
  thaiWaiting.hidden = true;
  renderStory(liveThai, thai, thaiHasTitle(story, thai));
  liveThai.scrollTop = liveThai.scrollHeight;
}

/** The result is in: every stage is done and the card makes way for the stories. */
export function finishStages() {
  setStage("translating", "");
  for (const item of stageItems) {
    if (item.classList.contains("is-active")) {
      item.classList.replace("is-active", "is-done");
      part(item, "state").textContent = ", done";
    }
  }
  closeProgress();
}

/** The run failed: mark the stages it was at, and keep what was written in either language. */
export function failStages() {
  for (const item of stageItems) {
    if (item.classList.contains("is-active")) {
      item.classList.replace("is-active", "is-failed");
      part(item, "state").textContent = ", failed";
    }
  }
  setTitle("The story could not be finished");
  leaveNote.hidden = true;
  live.hidden = !story && !thai;
}
