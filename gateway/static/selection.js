// The chosen photos or video: checking each file, the previews and the summary line.

import { $, paragraph } from "./dom.js";
import { isBusy } from "./controls.js";
import { formatBytes, kindOf, plural, refusal } from "./limits.js";

const fileInput = $("#files");
const filesError = $("#files-error");
const previews = $("#previews");
const summary = $("#selection-summary");

let items = []; // {id, file, kind, url}
let nextId = 1;

export function selectedItems() {
  return items;
}

export function addFiles(fileList) {
  if (isBusy()) return;
  const problems = [];
  for (const file of fileList) {
    const kind = kindOf(file);
    const problem = refusal(file, kind, items);
    if (problem) {
      problems.push(problem);
      continue;
    }
    items.push({ id: nextId++, file, kind, url: URL.createObjectURL(file) });
  }
  showFileProblems(problems);
  renderPreviews();
}

export function clearSelection() {
  for (const item of items) URL.revokeObjectURL(item.url);
  items = [];
  renderPreviews();
}

export function showFileProblems(problems) {
  filesError.replaceChildren();
  filesError.hidden = problems.length === 0;
  if (problems.length === 1) {
    filesError.append(paragraph(problems[0]));
  } else if (problems.length > 1) {
    const list = document.createElement("ul");
    for (const problem of problems) {
      const li = document.createElement("li");
      li.textContent = problem;
      list.append(li);
    }
    filesError.append(list);
  }
}

function removeItem(id) {
  const index = items.findIndex((it) => it.id === id);
  if (index < 0) return;
  URL.revokeObjectURL(items[index].url);
  const name = items[index].file.name;
  items.splice(index, 1);
  showFileProblems([]);
  renderPreviews();
  // Keep keyboard users in the list: focus the neighbour's remove button, or the picker.
  const buttons = previews.querySelectorAll(".preview__remove");
  (buttons[Math.min(index, buttons.length - 1)] || fileInput).focus();
  summary.textContent = `Removed ${name}. ${summaryText()}`;
}

function summaryText() {
  if (!items.length) return "";
  const total = items.reduce((sum, it) => sum + it.file.size, 0);
  const what = items[0].kind === "video" ? "1 video" : plural(items.length, "photo");
  return `${what} selected, ${formatBytes(total)}.`;
}

/** The video player, or the picture (a file the browser cannot draw still goes to the server). */
function previewMedia(item) {
  if (item.kind === "video") {
    const video = document.createElement("video");
    video.src = item.url;
    video.controls = true;
    video.preload = "metadata";
    video.playsInline = true;
    video.setAttribute("aria-label", `Preview of ${item.file.name}`);
    video.addEventListener("error", () => video.replaceWith(noPreview(item)), { once: true });
    return video;
  }
  const img = document.createElement("img");
  img.src = item.url;
  img.alt = `Preview of ${item.file.name}`;
  img.decoding = "async";
  img.addEventListener("error", () => img.replaceWith(noPreview(item)), { once: true });
  return img;
}

/** A named placeholder for a file this browser cannot show (HEIC in Chromium, say): the
 * server still reads it. */
function noPreview(item) {
  const none = document.createElement("div");
  none.className = "preview__none";
  const extension = (item.file.name.split(".").pop() || "").toUpperCase();
  none.textContent = extension ? `${extension}: no preview here, the story will use it` : "No preview";
  return none;
}

function span(className, text) {
  const element = document.createElement("span");
  element.className = className;
  element.textContent = text;
  return element;
}

function renderPreviews() {
  previews.replaceChildren();
  previews.classList.toggle("is-video", items.some((it) => it.kind === "video"));
  for (const item of items) {
    const li = document.createElement("li");
    li.className = "preview";
    li.dataset.kind = item.kind;
    li.append(previewMedia(item));
    const meta = document.createElement("div");
    meta.className = "preview__meta";
    const name = span("preview__name", item.file.name);
    name.title = item.file.name;
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "preview__remove";
    remove.setAttribute("aria-label", `Remove ${item.file.name}`);
    remove.title = "Remove";
    remove.textContent = "×";
    remove.addEventListener("click", () => removeItem(item.id));
    meta.append(name, span("preview__size", formatBytes(item.file.size)), remove);
    li.append(meta);
    previews.append(li);
  }
  summary.textContent = summaryText();
}
