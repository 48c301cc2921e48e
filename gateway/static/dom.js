// Small helpers that every module of the page uses.

export const $ = (selector) => document.querySelector(selector);

export function paragraph(text, className) {
  const p = document.createElement("p");
  p.textContent = text;
  if (className) p.className = className;
  return p;
}

/** How to scroll: smoothly, unless the reader asked for less motion. */
export function scrollBehavior() {
  return window.matchMedia("(prefers-reduced-motion: reduce)").matches ? "auto" : "smooth";
}
