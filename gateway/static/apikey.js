// The API key, when this server wants one: asked for once, then kept in sessionStorage, so
// for this tab only and gone when it closes. The server says whether keys are on in the
// form's data-api-key; a 401 later (a key revoked) asks again.

import { $ } from "./dom.js";

const STORE = "imgstory.apiKey";
const form = $("#story-form");
const dialog = $("#key-dialog");
const keyForm = $("#key-form");
const input = $("#api-key");
const reason = $("#key-reason");

let asking = null; // the answer being waited for, when the dialog is open

/** Whether the page was told that every analysis needs a key. */
export function keyNeeded() {
  return form.dataset.apiKey === "required";
}

/** The key this tab was given, or null. */
export function storedKey() {
  try {
    return sessionStorage.getItem(STORE);
  } catch {
    return null; // storage refused (a privacy mode): the key is asked for each time
  }
}

export function forgetKey() {
  try {
    sessionStorage.removeItem(STORE);
  } catch {
    // nothing was stored
  }
}

/** Ask for the key, saying `why`; resolves to the key (kept for this tab) or null if cancelled. */
export function askForKey(why) {
  if (asking) return asking;
  reason.textContent = why;
  input.value = "";
  asking = new Promise((resolve) => {
    const finish = () => {
      dialog.removeEventListener("close", finish);
      asking = null;
      const key = dialog.returnValue === "ok" ? input.value.trim() : "";
      input.value = "";
      if (!key) {
        resolve(null);
        return;
      }
      try {
        sessionStorage.setItem(STORE, key);
      } catch {
        // not kept: this request still uses it
      }
      resolve(key);
    };
    dialog.addEventListener("close", finish);
  });
  dialog.returnValue = "";
  dialog.showModal();
  input.focus();
  return asking;
}

keyForm.addEventListener("submit", (event) => {
  event.preventDefault();
  if (!input.value.trim()) {
    input.focus();
    return;
  }
  dialog.close("ok");
});
$("#key-cancel").addEventListener("click", () => dialog.close("cancel"));
