// The form's prompt, style presets and buttons, and whether a story is being written.

import { $ } from "./dom.js";
import { LIMITS } from "./limits.js";
import { steeringControls } from "./steering.js";

const form = $("#story-form");
const prompt = $("#prompt");
const promptUsed = $("#prompt-used");
const chips = [...document.querySelectorAll(".chip")];
const submit = $("#submit");

let busy = false; // true from sending until the result, an error or a cancel

export function isBusy() {
  return busy;
}

/** Lock the form while a story is on its way, and free it again afterwards. */
export function setBusy(value) {
  busy = value;
  submit.disabled = value;
  submit.textContent = value ? "Writing…" : "Write my story";
  $("#cancel").hidden = !value;
  $("#files").disabled = value;
  prompt.readOnly = value;
  for (const button of [...chips, ...$("#previews").querySelectorAll("button"), ...steeringControls()]) {
    button.disabled = value;
  }
  form.setAttribute("aria-busy", String(value));
  $("#progress").classList.toggle("is-working", value);
}

/** Count the prompt's characters and press the preset it matches, if any. */
export function syncPrompt() {
  const used = prompt.value.length;
  promptUsed.textContent = String(used);
  promptUsed.parentElement.classList.toggle("is-near", used > LIMITS.maxPrompt * 0.9);
  for (const chip of chips) {
    chip.setAttribute("aria-pressed", String(prompt.value.trim() === chip.dataset.prompt));
  }
}

/** A preset fills the prompt with its text; pressing it again empties the prompt. */
export function wirePresets() {
  for (const chip of chips) {
    chip.addEventListener("click", () => {
      const on = chip.getAttribute("aria-pressed") === "true";
      prompt.value = on ? "" : chip.dataset.prompt;
      syncPrompt();
    });
  }
  prompt.addEventListener("input", syncPrompt);
}

export function clearPrompt() {
  prompt.value = "";
  syncPrompt();
}
