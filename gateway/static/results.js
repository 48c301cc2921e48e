// The finished stories: both languages, the token usage, copying and downloading.

import { $, copyText, scrollBehavior } from "./dom.js";
import { plural } from "./limits.js";
import { announce } from "./progress.js";
import { asMarkdown, asText, fileStem, hasTitle, renderStory } from "./story.js";

const results = $("#results");
let lastResult = null;

const number = (n) => Number(n).toLocaleString("en-US");

function usageRow(label, model, usage) {
  const tr = document.createElement("tr");
  const head = document.createElement("td");
  head.textContent = label;
  if (model) {
    const small = document.createElement("span");
    small.className = "usage__model";
    small.textContent = model;
    head.append(small);
  }
  tr.append(head);
  for (const n of [usage.input_tokens, usage.output_tokens, usage.total_tokens]) {
    const td = document.createElement("td");
    td.textContent = number(n);
    tr.append(td);
  }
  return tr;
}

function showUsage(result) {
  const usage = result.token_usage;
  $("#usage").textContent =
    `${number(usage.total_tokens)} tokens in total: ${number(usage.input_tokens)} in, ${number(usage.output_tokens)} out.`;
  const rows = $("#usage-rows");
  rows.replaceChildren();
  if (result.usage_by_stage) {
    rows.append(usageRow("Story", result.models?.story, result.usage_by_stage.story));
    rows.append(usageRow("Translation", result.models?.translation, result.usage_by_stage.translation));
  }
  rows.append(usageRow("Total", "", usage));
}

/**
 * Mark the Thai as a rough draft when the server doubts parts of it match the English
 * (`result.warnings`, after its own retry), with each reason; unmark it otherwise.
 */
function showDoubts(warnings) {
  const thai = $("#thai");
  const card = thai.closest(".story-card");
  $("#thai-draft")?.remove();
  card.classList.toggle("is-rough", warnings.length > 0);
  if (!warnings.length) {
    thai.removeAttribute("aria-describedby");
    return;
  }
  const note = document.createElement("div");
  note.id = "thai-draft";
  note.className = "draft-note";
  note.lang = "en";
  note.setAttribute("role", "note");
  const badge = document.createElement("p");
  badge.className = "draft-note__badge";
  badge.textContent = "Rough draft";
  const why = document.createElement("p");
  why.className = "draft-note__why";
  why.textContent = "Parts of this translation may not match the English:";
  const list = document.createElement("ul");
  list.className = "draft-note__list";
  for (const warning of warnings) {
    const item = document.createElement("li");
    item.textContent = warning;
    list.append(item);
  }
  note.append(badge, why, list);
  thai.before(note);
  thai.setAttribute("aria-describedby", "thai-draft");
}

/**
 * Say so, kindly, when the story model could not see the pictures (the offline default
 * writes from what ImgStory measured in them), and how to get one that can.
 */
function showSight(result, notes = []) {
  const english = $("#english");
  $("#sight-note")?.remove();
  if (result.models?.story_saw_pictures !== false && !notes.length) {
    english.removeAttribute("aria-describedby");
    return;
  }
  const note = document.createElement("div");
  note.id = "sight-note";
  note.className = "sight-note";
  note.setAttribute("role", "note");
  for (const text of notes) note.append(Object.assign(document.createElement("p"), { textContent: text }));
  if (result.models?.story_saw_pictures !== false) {
    english.before(note);
    english.setAttribute("aria-describedby", "sight-note");
    return;
  }
  const what = document.createElement("p");
  what.textContent =
    "Written by the offline model, which cannot see pictures: it wrote from what ImgStory " +
    "noticed in them (things, people, colours, light, text and speech), so details may differ.";
  const how = document.createElement("p");
  how.textContent =
    "For stories that follow your pictures closely, connect OpenAI (set OPENAI_API_KEY) or " +
    "any OpenAI-compatible vision server such as vLLM, Ollama or llama.cpp (set OPENAI_BASE_URL).";
  note.append(what, how);
  english.before(note);
  english.setAttribute("aria-describedby", "sight-note");
}

/** The pictures' alt text, in both languages, under the stories (hidden when none). */
function showAltText(result) {
  const alts = Array.isArray(result.alt_text) ? result.alt_text : [];
  const box = $("#alt-text");
  const list = $("#alt-text-list");
  list.replaceChildren();
  box.hidden = !alts.length;
  for (const alt of alts) {
    const item = document.createElement("li");
    item.append(Object.assign(document.createElement("span"), { textContent: alt.english, lang: "en" }));
    if (alt.thai) {
      item.append(document.createElement("br"));
      item.append(Object.assign(document.createElement("span"), { textContent: alt.thai, lang: "th", className: "thai" }));
    }
    list.append(item);
  }
}

/**
 * Show the stories of `result`, made from `photos` photos (or a video). Unknown for a job
 * opened from its address: each photo is one picture shown to the model.
 */
export function showResult(result, photos = null) {
  lastResult = result;
  const titled = hasTitle(result.english);
  renderStory($("#english"), result.english, titled);
  renderStory($("#thai"), result.thai, titled && hasTitle(result.thai));
  const warnings = Array.isArray(result.warnings) ? result.warnings : [];
  // Doubts about the Thai mark it a rough draft; anything else is about the story.
  const doubts = warnings.filter((w) => /\bthe Thai\b/.test(w));
  showDoubts(doubts);
  showSight(result, warnings.filter((w) => !doubts.includes(w)));
  showAltText(result);
  showUsage(result);

  const media = result.media === "video" ? "1 video" : plural(photos ?? result.frames_used, "photo");
  const frames = typeof result.frames_used === "number"
    ? `, ${plural(result.frames_used, result.media === "video" ? "frame" : "picture")} ${
      result.models?.story_saw_pictures === false ? "described to" : "shown to"} the model` : "";
  $("#media-line").textContent = `${media}${frames}. Request ${result.request_id || "–"}.`;

  results.hidden = false;
  announce(doubts.length
    ? "Your story is ready, in English and Thai; the Thai is a rough draft."
    : "Your story is ready, in English and Thai.");
  const heading = $("#english-title");
  heading.tabIndex = -1;
  heading.focus({ preventScroll: true });
  results.scrollIntoView({ block: "start", behavior: scrollBehavior() });
}

export function clearResult() {
  results.hidden = true;
  lastResult = null;
}

/** Copy the story `button` names (data-copy="english" or "thai") and say how it went. */
export async function copyStory(button) {
  if (!lastResult) return;
  const which = button.dataset.copy;
  const label = which === "thai" ? "Thai" : "English";
  try {
    await copyText(lastResult[which]);
    button.textContent = "Copied ✓";
    $("#copy-status").textContent = `${label} story copied.`;
  } catch {
    button.textContent = "Copy failed";
    $("#copy-status").textContent = `Could not copy the ${label} story; select the text instead.`;
  }
  setTimeout(() => { button.textContent = "Copy"; }, 2000);
}

const FORMATS = {
  txt: { type: "text/plain;charset=utf-8", render: asText },
  md: { type: "text/markdown;charset=utf-8", render: asMarkdown },
};

/** Save the story as a file in `format` ("txt" or "md"). */
export function download(format) {
  if (!lastResult) return;
  const { type, render } = FORMATS[format];
  const url = URL.createObjectURL(new Blob([render(lastResult)], { type }));
  const link = document.createElement("a");
  link.href = url;
  link.download = `${fileStem(lastResult)}.${format}`;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}
