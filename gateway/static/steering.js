// The story's length (three radio buttons) and its cast: a short list of names, each with
// who or what it is, sent as the `cast` field's lines `Name: who or what`.

import { $ } from "./dom.js";

const MAX_CAST = 8;
const MAX_CAST_CHARS = 400;
const list = $("#cast");
const add = $("#cast-add");

/** A text field of a cast row; its label is set by syncCast. */
function textField(field, maxLength, placeholder) {
  const input = document.createElement("input");
  input.type = "text";
  input.dataset.field = field;
  input.maxLength = maxLength;
  input.placeholder = placeholder;
  return input;
}

/** One row of the cast editor: a name, who it is, and a button to remove the row. */
function castRow() {
  const first = list.children.length === 0;
  const row = document.createElement("li");
  const nameInput = textField("name", 60, first ? "Pumpkin" : "Name");
  const whoInput = textField("who", 200, first ? "the orange cat" : "who or what in the pictures");
  const remove = document.createElement("button");
  remove.type = "button";
  remove.className = "button button--small";
  remove.textContent = "Remove";
  remove.addEventListener("click", () => {
    const next = row.nextElementSibling || row.previousElementSibling;
    row.remove();
    syncCast();
    (next?.querySelector("input") || add).focus();
  });
  row.append(nameInput, whoInput, remove);
  return row;
}

function syncCast() {
  add.disabled = list.children.length >= MAX_CAST;
  [...list.children].forEach((row, index) => {
    const [nameInput, whoInput, remove] = row.children;
    nameInput.setAttribute("aria-label", `Name ${index + 1}`);
    whoInput.setAttribute("aria-label", `Who is name ${index + 1}`);
    remove.setAttribute("aria-label", `Remove name ${index + 1}`);
  });
}

export function wireSteering() {
  add.addEventListener("click", () => {
    if (list.children.length >= MAX_CAST) return;
    const row = castRow();
    list.append(row);
    syncCast();
    row.querySelector("input").focus();
  });
}

/** The cast's rows with something in them, as {name, who}, tidied. */
function castEntries() {
  return [...list.children]
    .map((row) => ({
      name: row.children[0].value.replace(/\s+/g, " ").trim(),
      who: row.children[1].value.replace(/\s+/g, " ").trim(),
    }))
    .filter((entry) => entry.name || entry.who);
}

/** What is wrong with the cast, in words the person can act on ([] when nothing). */
export function castProblems() {
  const problems = [];
  castEntries().forEach((entry, index) => {
    if (!entry.name) problems.push(`Name ${index + 1} is empty: give a name, or remove the row.`);
    else if (entry.name.includes(":")) problems.push(`Name ${index + 1} cannot contain a colon (:).`);
    if (!entry.who) problems.push(`Say who or what ${entry.name || `name ${index + 1}`} is in the pictures.`);
  });
  if (castText().length > MAX_CAST_CHARS) {
    problems.push(`The names and descriptions are ${castText().length} characters long; at most ${MAX_CAST_CHARS} are allowed.`);
  }
  return problems;
}

function castText() {
  return castEntries().map((entry) => `${entry.name}: ${entry.who}`).join("\n");
}

/** Add the length (unless the default) and the cast (if any) to the form `data`. */
export function addSteering(data) {
  const length = document.querySelector('input[name="length"]:checked')?.value;
  if (length && length !== "medium") data.append("length", length);
  const cast = castText();
  if (cast) data.append("cast", cast);
}

/** Another take's JSON: the style `prompt` (empty: the default), the length and the cast. */
export function steeringBody(prompt) {
  const length = document.querySelector('input[name="length"]:checked')?.value || "medium";
  return { prompt, length, cast: castText() };
}

/** The controls to lock while a story is being written. */
export function steeringControls() {
  return [...document.querySelectorAll('input[name="length"]'), ...list.querySelectorAll("input, button"), add];
}

export function clearSteering() {
  $("#length-medium").checked = true;
  list.replaceChildren();
  syncCast();
}
