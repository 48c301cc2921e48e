// The upload limits (set on the form by the server) and the checks made here before any upload.

import { $ } from "./dom.js";

const MIB = 1024 * 1024;

const form = $("#story-form");
export const LIMITS = {
  imageBytes: Number(form.dataset.maxImageMb) * MIB,
  videoBytes: Number(form.dataset.maxVideoMb) * MIB,
  maxImages: Number(form.dataset.maxImages),
  maxPrompt: Number(form.dataset.maxPrompt),
};
const KINDS = {
  image: {
    types: ["image/jpeg", "image/jpg", "image/pjpeg", "image/png", "image/heic", "image/heif",
      "image/heic-sequence", "image/heif-sequence", "image/avif", "image/webp", "image/gif"],
    extensions: ["jpg", "jpeg", "png", "heic", "heif", "avif", "webp", "gif"],
  },
  video: {
    types: ["video/mp4", "video/quicktime", "video/x-m4v", "video/webm", "video/x-matroska"],
    extensions: ["mp4", "m4v", "mov", "webm", "mkv"],
  },
};
/** What a person may choose, as the hint and the refusals say it. */
export const ACCEPTED = "JPG, PNG, HEIC, AVIF, WebP or GIF photos, or one MP4, MOV, WebM or MKV video";

/** Write the limits into the hints that name them, and cap the prompt. */
export function showLimits() {
  const values = {
    "max-images": LIMITS.maxImages,
    "max-image-mb": LIMITS.imageBytes / MIB,
    "max-video-mb": LIMITS.videoBytes / MIB,
    "max-prompt": LIMITS.maxPrompt,
  };
  for (const span of document.querySelectorAll("[data-limit]")) {
    if (span.dataset.limit in values) span.textContent = String(values[span.dataset.limit]);
  }
  $("#prompt").maxLength = LIMITS.maxPrompt;
}

/** A size for people; rounded up, so a file over a limit never reads as exactly the limit. */
export function formatBytes(bytes) {
  if (bytes < MIB) return `${Math.max(1, Math.ceil(bytes / 1024))} KB`;
  const mb = Math.ceil((bytes / MIB) * 10) / 10;
  return `${Number.isInteger(mb) ? mb : mb.toFixed(1)} MB`;
}

export function plural(n, word) {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

/** "image", "video" or null, from the MIME type the browser reports or else the extension. */
export function kindOf(file) {
  const type = (file.type || "").toLowerCase();
  const extension = (file.name.split(".").pop() || "").toLowerCase();
  const known = Object.entries(KINDS);
  const byType = known.find(([, rule]) => rule.types.includes(type));
  if (byType) return byType[0];
  // A type the browser knows and we don't take (BMP, TIFF, AVI...) is refused whatever its name.
  if (type && type !== "application/octet-stream") return null;
  const byName = known.find(([, rule]) => rule.extensions.includes(extension));
  return byName ? byName[0] : null;
}

/** Why this file cannot join the selection `items` ({file, kind}), or null if it can. */
export function refusal(file, kind, items) {
  const name = `“${file.name}”`;
  if (!kind) return `${name} is not a photo or video this service reads. Choose ${ACCEPTED}.`;
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
