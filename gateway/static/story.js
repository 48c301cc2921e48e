// The story as text: paragraphs on the page, its title, and the .txt and .md downloads.

import { paragraph } from "./dom.js";

/** A short first line without final punctuation is the story's title. */
export function hasTitle(text) {
  const first = text.trim().split(/\n\s*\n/)[0] || "";
  return text.trim().includes("\n") && !first.includes("\n") && first.length <= 90 && !/[.!?…"”]$/.test(first);
}

/** The story as paragraphs, the first one styled as the title when `withTitle`. */
export function renderStory(element, text, withTitle) {
  element.replaceChildren();
  const parts = text.trim().split(/\n\s*\n/);
  parts.forEach((part, i) => {
    element.append(paragraph(part.trim(), i === 0 && withTitle ? "story__title" : ""));
  });
}

function storyTitle(result) {
  return hasTitle(result.english) ? result.english.trim().split("\n")[0].trim() : "A story from ImgStory";
}

/** A file name without extension, from the title (or the request id). */
export function fileStem(result) {
  const slug = storyTitle(result).toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "").slice(0, 40);
  return `imgstory-${slug || (result.request_id || "story").slice(0, 8)}`;
}

function usageLine(result) {
  const u = result.token_usage;
  return `Tokens: ${u.input_tokens} input, ${u.output_tokens} output, ${u.total_tokens} total`;
}

export function asText(result) {
  const rule = (s) => `${s}\n${"=".repeat(s.length)}`;
  return [
    rule("English"), "", result.english.trim(), "",
    rule("Thai (ภาษาไทย)"), "", result.thai.trim(), "",
    usageLine(result), "",
  ].join("\n");
}

export function asMarkdown(result) {
  const models = result.models ? ` (story: \`${result.models.story}\`, translation: \`${result.models.translation}\`)` : "";
  return [
    `# ${storyTitle(result)}`, "",
    "## English", "", result.english.trim(), "",
    "## ภาษาไทย (Thai)", "", result.thai.trim(), "",
    "---", "", `${usageLine(result)}${models}`, "",
  ].join("\n");
}
