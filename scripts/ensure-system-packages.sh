#!/usr/bin/env bash
# Install the Debian packages ImgStory uses, when missing:
#   run:  tesseract OCR with Thai and English (optional: without it pictures get no OCR facts)
#   test: also espeak-ng + ffmpeg (test videos with speech) and chromium (browser tests)
set -euo pipefail
mode=${1:-run}
want=(tesseract-ocr tesseract-ocr-tha tesseract-ocr-eng)
[ "$mode" = test ] && want+=(espeak-ng ffmpeg chromium fonts-thai-tlwg)
missing=()
for pkg in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null 2>&1 || [ "$(id -u)" != 0 ]; then
  echo "missing Debian packages: ${missing[*]} (install them with apt-get as root)" >&2
  [ "$mode" = test ] && exit 1 || exit 0
fi
echo "installing Debian packages: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 || {
  apt-get update -q >/dev/null
  apt-get install -y -q "${missing[@]}" >/dev/null
}
