// The story as text: paragraphs on the page, its title, and the .txt and .md downloads.

import { paragraph } from "./dom.js";

const firstPart = (text) => text.trim().split(/\n\s*\n/)[0] || "";
const isTitleLine = (line) => !line.includes("\n") && line.length <= 90 && !/[.!?…"”]$/.test(line);

/** A short first line without final punctuation is the story's title. */
export function hasTitle(text) {
  return text.trim().includes("\n") && isTitleLine(firstPart(text));
}

/**
 * Whether the Thai so far starts with the title, when `english` (so far) has one. The title
 * is translated first and on its own, so a lone first line can be the title already.
 */
export function thaiHasTitle(english, thai) {
  if (!hasTitle(english)) return false;
  return thai.trim().includes("\n") ? hasTitle(thai) : isTitleLine(firstPart(thai));
}

/**
 * The story as paragraphs, the first one styled as the title when `withTitle`. Paragraphs
 * already on the page are kept when unchanged, so a growing story only adds or updates
 * its last paragraphs (and a live region reads out only what is new).
 */
export function renderStory(element, text, withTitle) {
  const parts = text.trim().split(/\n\s*\n/);
  parts.forEach((part, i) => {
    const words = part.trim();
    const className = i === 0 && withTitle ? "story__title" : "";
    const shown = element.children[i];
    if (!shown || shown.tagName !== "P") {
      const fresh = paragraph(words, className);
      if (shown) shown.replaceWith(fresh);
      else element.append(fresh);
      return;
    }
    if (shown.textContent !== words) shown.textContent = words;
    if (shown.className !== className) shown.className = className;
  });
  while (element.children.length > parts.length) element.lastElementChild.remove();
}

function storyTitle(result) {
  if (result.title?.english) return result.title.english;
  return hasTitle(result.english) ? result.english.trim().split("\n")[0].trim() : "A story from ImgStory";
}

/** The pictures' alt text, a line each in both languages ([] when there is none). */
function altLines(result, bullet) {
  const alts = Array.isArray(result.alt_text) ? result.alt_text : [];
  return alts.map((alt, i) => `${bullet}${i + 1}. ${alt.english}${alt.thai ? ` / ${alt.thai}` : ""}`);
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
  const alts = altLines(result, "");
  return [
    rule("English"), "", result.english.trim(), "",
    rule("Thai (ภาษาไทย)"), "", result.thai.trim(), "",
    ...(alts.length ? [rule("What the pictures show (alt text)"), "", ...alts, ""] : []),
    usageLine(result), "",
  ].join("\n");
}

export function asMarkdown(result) {
  const models = result.models ? ` (story: \`${result.models.story}\`, translation: \`${result.models.translation}\`)` : "";
  const alts = altLines(result, "- ");
  const thaiTitle = result.title?.thai ? ` · ${result.title.thai}` : "";
  return [
    `# ${storyTitle(result)}${thaiTitle}`, "",
    "## English", "", result.english.trim(), "",
    "## ภาษาไทย (Thai)", "", result.thai.trim(), "",
    ...(alts.length ? ["## What the pictures show (alt text)", "", ...alts, ""] : []),
    "---", "", `${usageLine(result)}${models}`, "",
  ].join("\n");
}
