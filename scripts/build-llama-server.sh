#!/usr/bin/env bash
# Build llama.cpp's llama-server into the virtualenv given as $1, from the llama.cpp
# sources that the pinned llama-cpp-python sdist vendors (no other download: pip's
# cache usually holds the sdist already). Portable CPU code, no web UI, no HTTPS.
# Like pip's wheel cache, the binary is kept per version under the user's cache
# directory, so another checkout on this machine installs it without compiling.
set -euo pipefail
venv=${1:-.venv}
target="$venv/bin/llama-server"
version=$(sed -n 's/.*"llama-cpp-python==\([^"]*\)".*/\1/p' pyproject.toml)
if [ -z "$version" ]; then
  echo "pyproject.toml pins no llama-cpp-python version" >&2
  exit 1
fi
stamp="$target.version"
if [ -x "$target" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$version" ]; then
  exit 0
fi
work="${XDG_CACHE_HOME:-$HOME/.cache}/imgstory/llama-server-$version-$(uname -m)"
mkdir -p "$work"
if [ -x "$work/llama-server" ]; then
  install -m 755 "$work/llama-server" "$target"
  echo "$version" >"$stamp"
  exit 0
fi
if [ ! -d "$work/llama.cpp" ]; then
  echo "fetching the llama-cpp-python $version sdist for its llama.cpp sources" >&2
  "$venv/bin/python" -m pip download --quiet --no-deps --no-binary :all: \
    "llama-cpp-python==$version" -d "$work/sdist"
  tar -xzf "$work"/sdist/llama_cpp_python-*.tar.gz -C "$work" --strip-components=2 \
    --wildcards --exclude "*/.git/*" "llama_cpp_python-$version/vendor/llama.cpp/*"
  rm -rf "$work/sdist"
fi
echo "building llama-server (a few minutes, once)" >&2
started=$(date +%s)
cmake -S "$work/llama.cpp" -B "$work/build" -DCMAKE_BUILD_TYPE=Release \
  -DGGML_NATIVE=OFF -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TESTS=OFF \
  -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
  -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF >"$work/configure.log" 2>&1 \
  || { tail -20 "$work/configure.log" >&2; exit 1; }
cmake --build "$work/build" --target llama-server -j "${CMAKE_BUILD_PARALLEL_LEVEL:-2}" \
  >"$work/build.log" 2>&1 || { tail -30 "$work/build.log" >&2; exit 1; }
install -m 755 "$work/build/bin/llama-server" "$work/llama-server"
install -m 755 "$work/llama-server" "$target"
echo "$version" >"$stamp"
rm -rf "$work/build" "$work/llama.cpp"
echo "built llama-server in $(( $(date +%s) - started )) s" >&2
