// ImgStory page: pick or drop media, check it here first, then POST /analyze/stream and show
// the upload percentage, the server's stages, the English story as it is written and the result.
// XMLHttpRequest rather than fetch: only XHR reports upload progress.
"use strict";

(() => {
  const $ = (selector) => document.querySelector(selector);
  const form = $("#story-form");
  const fileInput = $("#files");
  const dropzone = $("#dropzone");
  const filesError = $("#files-error");
  const previews = $("#previews");
  const summary = $("#selection-summary");
  const prompt = $("#prompt");
  const promptUsed = $("#prompt-used");
  const chips = [...document.querySelectorAll(".chip")];
  const submit = $("#submit");
  const cancel = $("#cancel");
  const progress = $("#progress");
  const progressTitle = $("#progress-title");
  const statusLine = $("#status");
  const stageItems = [...document.querySelectorAll("#stages .stage")];
  const uploadBar = $("#upload-bar");
  const live = $("#live");
  const liveText = $("#live-text");
  const errorBox = $("#error");
  const results = $("#results");

  const MIB = 1024 * 1024;
  const LIMITS = {
    imageBytes: Number(form.dataset.maxImageMb) * MIB,
    videoBytes: Number(form.dataset.maxVideoMb) * MIB,
    maxImages: Number(form.dataset.maxImages),
    maxPrompt: Number(form.dataset.maxPrompt),
  };
  const KINDS = {
    image: { types: ["image/jpeg", "image/jpg", "image/pjpeg", "image/png"], extensions: ["jpg", "jpeg", "png"] },
    video: { types: ["video/mp4"], extensions: ["mp4", "m4v"] },
  };
  const STAGES = stageItems.map((item) => item.dataset.stage);
  const ERROR_TITLES = {
    0: "Could not reach ImgStory",
    400: "The upload was not accepted",
    413: "The upload is too large",
    422: "This media could not be used",
    429: "The story model is busy",
    500: "Something went wrong on our side",
    503: "The story service is unavailable right now",
  };

  let items = []; // {id, file, kind, url}
  let nextId = 1;
  let request = null; // the XMLHttpRequest in flight
  let run = null; // what one request has seen so far
  let lastResult = null;

  for (const span of document.querySelectorAll("[data-limit]")) {
    const values = {
      "max-images": LIMITS.maxImages,
      "max-image-mb": LIMITS.imageBytes / MIB,
      "max-video-mb": LIMITS.videoBytes / MIB,
      "max-prompt": LIMITS.maxPrompt,
    };
    if (span.dataset.limit in values) span.textContent = String(values[span.dataset.limit]);
  }
  prompt.maxLength = LIMITS.maxPrompt;

  // ---- choosing files -------------------------------------------------------------------

  /** A size for people; rounded up, so a file over a limit never reads as exactly the limit. */
  function formatBytes(bytes) {
    if (bytes < MIB) return `${Math.max(1, Math.ceil(bytes / 1024))} KB`;
    const mb = Math.ceil((bytes / MIB) * 10) / 10;
    return `${Number.isInteger(mb) ? mb : mb.toFixed(1)} MB`;
  }

  function plural(n, word) {
    return `${n} ${word}${n === 1 ? "" : "s"}`;
  }

  /** "image", "video" or null, from the MIME type the browser reports or else the extension. */
  function kindOf(file) {
    const type = (file.type || "").toLowerCase();
    const extension = (file.name.split(".").pop() || "").toLowerCase();
    const known = Object.entries(KINDS);
    const byType = known.find(([, rule]) => rule.types.includes(type));
    if (byType) return byType[0];
    // A type the browser knows and we don't take (GIF, HEIC, MOV...) is refused whatever its name.
    if (type && type !== "application/octet-stream") return null;
    const byName = known.find(([, rule]) => rule.extensions.includes(extension));
    return byName ? byName[0] : null;
  }

  /** Why this file cannot join the current selection, or null if it can. */
  function refusal(file, kind) {
    const name = `“${file.name}”`;
    if (!kind) return `${name} is not a JPG, PNG or MP4 file. Choose JPG or PNG photos, or one MP4 video.`;
    if (file.size === 0) return `${name} is empty.`;
    if (kind === "image" && file.size > LIMITS.imageBytes) {
      return `${name} is too large (${formatBytes(file.size)}): each photo can be at most ${LIMITS.imageBytes / MIB} MB.`;
    }
    if (kind === "video" && file.size > LIMITS.videoBytes) {
      return `${name} is too large (${formatBytes(file.size)}): a video can be at most ${LIMITS.videoBytes / MIB} MB.`;
    }
    if (items.some((it) => it.file.name === file.name && it.file.size === file.size
        && it.file.lastModified === file.lastModified)) {
      return `${name} is already in the list.`;
    }
    const hasVideo = items.some((it) => it.kind === "video");
    if (kind === "video" && items.length) {
      return `${name} was not added: a video is sent on its own. Remove the ${hasVideo ? "other video" : "photos"} first.`;
    }
    if (kind === "image" && hasVideo) {
      return `${name} was not added: a video is sent on its own. Remove the video first to use photos.`;
    }
    if (kind === "image" && items.length >= LIMITS.maxImages) {
      return `${name} was not added: at most ${LIMITS.maxImages} photos per story.`;
    }
    return null;
  }

  function addFiles(fileList) {
    if (request) return;
    const problems = [];
    for (const file of fileList) {
      const kind = kindOf(file);
      const problem = refusal(file, kind);
      if (problem) {
        problems.push(problem);
        continue;
      }
      items.push({ id: nextId++, file, kind, url: URL.createObjectURL(file) });
    }
    showFileProblems(problems);
    renderPreviews();
  }

  function showFileProblems(problems) {
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

  function renderPreviews() {
    previews.replaceChildren();
    previews.classList.toggle("is-video", items.some((it) => it.kind === "video"));
    for (const item of items) {
      const li = document.createElement("li");
      li.className = "preview";
      li.dataset.kind = item.kind;
      if (item.kind === "video") {
        const video = document.createElement("video");
        video.src = item.url;
        video.controls = true;
        video.preload = "metadata";
        video.playsInline = true;
        video.setAttribute("aria-label", `Preview of ${item.file.name}`);
        li.append(video);
      } else {
        const img = document.createElement("img");
        img.src = item.url;
        img.alt = `Preview of ${item.file.name}`;
        img.decoding = "async";
        // A file the browser cannot draw still goes to the server, which has the last word.
        img.addEventListener("error", () => {
          const none = document.createElement("div");
          none.className = "preview__none";
          none.textContent = "No preview";
          img.replaceWith(none);
        }, { once: true });
        li.append(img);
      }
      const meta = document.createElement("div");
      meta.className = "preview__meta";
      const name = document.createElement("span");
      name.className = "preview__name";
      name.textContent = item.file.name;
      name.title = item.file.name;
      const size = document.createElement("span");
      size.className = "preview__size";
      size.textContent = formatBytes(item.file.size);
      const remove = document.createElement("button");
      remove.type = "button";
      remove.className = "preview__remove";
      remove.setAttribute("aria-label", `Remove ${item.file.name}`);
      remove.title = "Remove";
      remove.textContent = "×";
      remove.addEventListener("click", () => removeItem(item.id));
      meta.append(name, size, remove);
      li.append(meta);
      previews.append(li);
    }
    summary.textContent = summaryText();
  }

  fileInput.addEventListener("change", () => {
    addFiles([...fileInput.files]);
    fileInput.value = ""; // so choosing the same file again fires change again
  });

  dropzone.addEventListener("click", (event) => {
    if (!event.target.closest("label, input, button, a") && !request) fileInput.click();
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
    event.dataTransfer.dropEffect = request ? "none" : "copy";
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

  // ---- the prompt -----------------------------------------------------------------------

  function syncPrompt() {
    const used = prompt.value.length;
    promptUsed.textContent = String(used);
    promptUsed.parentElement.classList.toggle("is-near", used > LIMITS.maxPrompt * 0.9);
    for (const chip of chips) {
      chip.setAttribute("aria-pressed", String(prompt.value.trim() === chip.dataset.prompt));
    }
  }

  for (const chip of chips) {
    chip.addEventListener("click", () => {
      const on = chip.getAttribute("aria-pressed") === "true";
      prompt.value = on ? "" : chip.dataset.prompt;
      syncPrompt();
    });
  }
  prompt.addEventListener("input", syncPrompt);

  // ---- sending and progress -------------------------------------------------------------

  function setBusy(busy) {
    submit.disabled = busy;
    submit.textContent = busy ? "Writing…" : "Write my story";
    cancel.hidden = !busy;
    fileInput.disabled = busy;
    prompt.readOnly = busy;
    for (const chip of chips) chip.disabled = busy;
    for (const button of previews.querySelectorAll("button")) button.disabled = busy;
    form.setAttribute("aria-busy", String(busy));
    progress.classList.toggle("is-working", busy);
  }

  function announce(text) {
    statusLine.textContent = text;
  }

  function resetStages(isVideo) {
    for (const item of stageItems) {
      item.classList.remove("is-active", "is-done", "is-skipped", "is-failed");
      item.querySelector(".stage__detail").textContent = "";
      item.querySelector(".stage__state").textContent = ", waiting";
      if ("videoOnly" in item.dataset) item.hidden = !isVideo;
    }
    uploadBar.hidden = false;
    uploadBar.value = 0;
    progressTitle.textContent = "Working on your story";
    live.hidden = true;
    liveText.textContent = "";
  }

  function stageItem(stage) {
    return stageItems.find((item) => item.dataset.stage === stage);
  }

  /** Make `stage` the current one: earlier stages are done (or skipped), later ones wait. */
  function setStage(stage, detail) {
    const index = STAGES.indexOf(stage);
    if (index < 0) {
      if (detail) announce(detail);
      return;
    }
    if (index < run.stageIndex) return; // never go backwards
    stageItems.forEach((item, i) => {
      const state = item.querySelector(".stage__state");
      if (i < index) {
        const reached = item.classList.contains("is-active") || item.classList.contains("is-done");
        item.classList.remove("is-active");
        item.classList.add(reached ? "is-done" : "is-skipped");
        state.textContent = reached ? ", done" : ", skipped";
        if (!reached && "videoOnly" in item.dataset) item.querySelector(".stage__detail").textContent = "Not needed";
      }
    });
    if (index > 0) uploadBar.hidden = true;
    $(".live__title").textContent =
      index > STAGES.indexOf("writing_story") ? "The English story" : "The story so far";
    const item = stageItems[index];
    item.classList.add("is-active");
    item.querySelector(".stage__state").textContent = ", in progress";
    const name = item.querySelector(".stage__name").textContent;
    // The server's detail often repeats the stage's name; show it only when it says more.
    if (detail && detail.toLowerCase() !== name.toLowerCase()) {
      item.querySelector(".stage__detail").textContent = detail;
    }
    if (index !== run.stageIndex || detail) {
      announce(detail && detail.toLowerCase() !== name.toLowerCase() ? `${name}: ${detail}` : name);
    }
    run.stageIndex = index;
  }

  function finishStages() {
    for (const item of stageItems) {
      if (item.classList.contains("is-active")) {
        item.classList.replace("is-active", "is-done");
        item.querySelector(".stage__state").textContent = ", done";
      }
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (request) return;
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
    const data = new FormData();
    for (const item of items) data.append("files", item.file, item.file.name);
    if (text) data.append("prompt", text);
    send(data, { isVideo: items[0].kind === "video", photos: items.length });
  });

  cancel.addEventListener("click", () => request?.abort());

  function send(data, what) {
    showFileProblems([]);
    errorBox.hidden = true;
    results.hidden = true;
    lastResult = null;
    const current = {
      what, parsed: 0, stageIndex: -1, story: "", result: false, failed: false, closed: false, lastAnnounced: -1,
    };
    run = current;
    resetStages(what.isVideo);
    progress.hidden = false;
    setBusy(true);
    setStage("uploading", "Starting the upload…");
    progress.scrollIntoView({ block: "start", behavior: reducedMotion() ? "auto" : "smooth" });

    const xhr = new XMLHttpRequest();
    request = xhr;
    // Events of a run that has already ended (result, error, cancel) change nothing.
    const guarded = (handler) => (event) => {
      if (run === current && !current.closed) handler(event);
    };
    xhr.open("POST", "/analyze/stream");
    xhr.setRequestHeader("Accept", "text/event-stream");
    xhr.upload.addEventListener("progress", guarded((event) => {
      if (!event.lengthComputable) return;
      const percent = Math.min(100, Math.floor((event.loaded / event.total) * 100));
      uploadBar.value = percent;
      stageItem("uploading").querySelector(".stage__detail").textContent =
        `${percent} % of ${formatBytes(event.total)}`;
      // Screen readers hear every 25 %, not every event.
      const step = Math.floor(percent / 25);
      if (step !== current.lastAnnounced) {
        current.lastAnnounced = step;
        announce(`Uploading: ${percent} %`);
      }
    }));
    xhr.upload.addEventListener("load", guarded(() => {
      uploadBar.value = 100;
      if (current.stageIndex <= 0) {
        stageItem("uploading").querySelector(".stage__detail").textContent = "Uploaded, waiting for the server…";
      }
    }));
    xhr.addEventListener("progress", guarded(() => readEvents(xhr)));
    xhr.addEventListener("load", guarded(() => {
      readEvents(xhr);
      if (!current.closed) done(xhr);
    }));
    xhr.addEventListener("error", guarded(() => {
      fail(0, "The connection to the server failed. Check that ImgStory is running and try again.");
    }));
    xhr.addEventListener("abort", guarded(() => {
      progress.hidden = true;
      announce("Cancelled.");
      settle();
      submit.focus();
    }));
    xhr.send(data);
  }

  /** The run is over (result, error or cancel): the form is usable again. */
  function settle() {
    run.closed = true;
    request = null;
    setBusy(false);
  }

  function isEventStream(xhr) {
    return xhr.status === 200 && (xhr.getResponseHeader("Content-Type") || "").includes("text/event-stream");
  }

  /** Parse the complete Server-Sent Events that have arrived since the last call. */
  function readEvents(xhr) {
    if (xhr.readyState < 3 || !isEventStream(xhr)) return;
    const current = run;
    // Normalising CR LF and CR to LF keeps every earlier offset valid as more text arrives.
    const text = xhr.responseText.replace(/\r\n?/g, "\n");
    let end;
    while (!current.closed && (end = text.indexOf("\n\n", current.parsed)) !== -1) {
      const block = text.slice(current.parsed, end);
      current.parsed = end + 2;
      dispatch(block);
    }
  }

  function dispatch(block) {
    let event = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (!line || line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") event = value;
      else if (field === "data") data.push(value);
    }
    if (!data.length) return;
    let payload;
    try {
      payload = JSON.parse(data.join("\n"));
    } catch {
      return;
    }
    onEvent(event, payload);
  }

  function onEvent(event, payload) {
    if (run.closed) return;
    switch (event) {
      case "stage":
        setStage(payload.stage, payload.detail);
        break;
      case "story":
        if (run.stageIndex < STAGES.indexOf("writing_story")) setStage("writing_story", "");
        run.story += payload.text || "";
        live.hidden = false;
        renderStory(liveText, run.story, hasTitle(run.story));
        liveText.scrollTop = liveText.scrollHeight;
        break;
      case "result":
        run.result = true;
        showResult(payload);
        break;
      case "error":
        fail(payload.status || 500, payload.detail || "The server reported an error.");
        break;
      default:
        break;
    }
  }

  function done(xhr) {
    if (xhr.status !== 200) {
      progress.hidden = true; // refused before any work began: the error alone says it all
      let detail = xhr.statusText || "The server refused the request.";
      try {
        const body = JSON.parse(xhr.responseText);
        if (body && typeof body.detail === "string") detail = body.detail;
      } catch {
        // not JSON: keep the status text
      }
      fail(xhr.status, detail, xhr.getResponseHeader("Retry-After"));
    } else if (!isEventStream(xhr)) {
      fail(500, "The server answered with something other than an event stream.");
    } else if (!run.result && !run.failed) {
      fail(0, "The connection closed before the story was finished. Please try again.");
    }
  }

  function fail(status, detail, retryAfter) {
    if (run.failed || run.closed) return;
    run.failed = true;
    settle();
    const active = stageItems.find((item) => item.classList.contains("is-active"));
    if (active) {
      active.classList.replace("is-active", "is-failed");
      active.querySelector(".stage__state").textContent = ", failed";
    }
    progressTitle.textContent = "The story could not be finished";
    live.hidden = !run.story;
    const title = ERROR_TITLES[status] || `Error ${status}`;
    $("#error-title").textContent = status ? `${title} (HTTP ${status})` : title;
    let text = detail;
    if (retryAfter && /^\d+$/.test(retryAfter)) {
      text += ` Try again in ${plural(Number(retryAfter), "second")}.`;
    }
    $("#error-detail").textContent = text;
    errorBox.hidden = false;
    errorBox.scrollIntoView({ block: "nearest", behavior: reducedMotion() ? "auto" : "smooth" });
  }

  function reducedMotion() {
    return window.matchMedia("(prefers-reduced-motion: reduce)").matches;
  }

  // ---- results --------------------------------------------------------------------------

  function paragraph(text, className) {
    const p = document.createElement("p");
    p.textContent = text;
    if (className) p.className = className;
    return p;
  }

  /** The story as paragraphs; a short first line without final punctuation is its title. */
  function renderStory(element, text, withTitle) {
    element.replaceChildren();
    const parts = text.trim().split(/\n\s*\n/);
    parts.forEach((part, i) => {
      element.append(paragraph(part.trim(), i === 0 && withTitle ? "story__title" : ""));
    });
  }

  function hasTitle(text) {
    const first = text.trim().split(/\n\s*\n/)[0] || "";
    return text.trim().includes("\n") && !first.includes("\n") && first.length <= 90 && !/[.!?…"”]$/.test(first);
  }

  function showResult(result) {
    lastResult = result;
    settle();
    setStage("translating", "");
    finishStages();
    progress.hidden = true;
    const titled = hasTitle(result.english);
    renderStory($("#english"), result.english, titled);
    renderStory($("#thai"), result.thai, titled && hasTitle(result.thai));

    const usage = result.token_usage;
    const number = (n) => Number(n).toLocaleString("en-US");
    $("#usage").textContent =
      `${number(usage.total_tokens)} tokens in total: ${number(usage.input_tokens)} in, ${number(usage.output_tokens)} out.`;
    const rows = $("#usage-rows");
    rows.replaceChildren();
    const addRow = (label, model, u) => {
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
      for (const n of [u.input_tokens, u.output_tokens, u.total_tokens]) {
        const td = document.createElement("td");
        td.textContent = number(n);
        tr.append(td);
      }
      rows.append(tr);
    };
    if (result.usage_by_stage) {
      addRow("Story", result.models?.story, result.usage_by_stage.story);
      addRow("Translation", result.models?.translation, result.usage_by_stage.translation);
    }
    addRow("Total", "", usage);

    const media = result.media === "video" ? "1 video" : plural(run.what.photos, "photo");
    const frames = typeof result.frames_used === "number"
      ? `, ${plural(result.frames_used, result.media === "video" ? "frame" : "picture")} shown to the model` : "";
    $("#media-line").textContent = `${media}${frames}. Request ${result.request_id || "–"}.`;

    results.hidden = false;
    announce("Your story is ready, in English and Thai.");
    const heading = $("#english-title");
    heading.tabIndex = -1;
    heading.focus({ preventScroll: true });
    results.scrollIntoView({ block: "start", behavior: reducedMotion() ? "auto" : "smooth" });
  }

  async function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      await navigator.clipboard.writeText(text);
      return;
    }
    // Plain-HTTP pages have no clipboard API: copy through a selected, off-screen textarea.
    const area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "visually-hidden";
    document.body.append(area);
    area.select();
    const ok = document.execCommand("copy");
    area.remove();
    if (!ok) throw new Error("copy refused");
  }

  for (const button of document.querySelectorAll("[data-copy]")) {
    button.addEventListener("click", async () => {
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
    });
  }

  function storyTitle(result) {
    return hasTitle(result.english) ? result.english.trim().split("\n")[0].trim() : "A story from ImgStory";
  }

  function fileStem(result) {
    const slug = storyTitle(result).toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "").slice(0, 40);
    return `imgstory-${slug || (result.request_id || "story").slice(0, 8)}`;
  }

  function usageLine(result) {
    const u = result.token_usage;
    return `Tokens: ${u.input_tokens} input, ${u.output_tokens} output, ${u.total_tokens} total`;
  }

  function asText(result) {
    const rule = (s) => `${s}\n${"=".repeat(s.length)}`;
    return [
      rule("English"), "", result.english.trim(), "",
      rule("Thai (ภาษาไทย)"), "", result.thai.trim(), "",
      usageLine(result), "",
    ].join("\n");
  }

  function asMarkdown(result) {
    const models = result.models ? ` (story: \`${result.models.story}\`, translation: \`${result.models.translation}\`)` : "";
    return [
      `# ${storyTitle(result)}`, "",
      "## English", "", result.english.trim(), "",
      "## ภาษาไทย (Thai)", "", result.thai.trim(), "",
      "---", "", `${usageLine(result)}${models}`, "",
    ].join("\n");
  }

  function download(name, type, text) {
    const url = URL.createObjectURL(new Blob([text], { type }));
    const link = document.createElement("a");
    link.href = url;
    link.download = name;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }

  $("#download-txt").addEventListener("click", () => {
    if (lastResult) download(`${fileStem(lastResult)}.txt`, "text/plain;charset=utf-8", asText(lastResult));
  });
  $("#download-md").addEventListener("click", () => {
    if (lastResult) download(`${fileStem(lastResult)}.md`, "text/markdown;charset=utf-8", asMarkdown(lastResult));
  });
  $("#again").addEventListener("click", () => {
    for (const item of items) URL.revokeObjectURL(item.url);
    items = [];
    renderPreviews();
    prompt.value = "";
    syncPrompt();
    results.hidden = true;
    errorBox.hidden = true;
    lastResult = null;
    window.scrollTo({ top: 0, behavior: reducedMotion() ? "auto" : "smooth" });
    fileInput.focus({ preventScroll: true });
  });

  syncPrompt();
})();
