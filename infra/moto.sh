#!/usr/bin/env bash
# Starts or stops the moto server (DynamoDB + Secrets Manager emulator) for the tests.
#   infra/moto.sh start   → installs moto[server] if missing, starts it on $MOTO_PORT, waits until it answers
#   infra/moto.sh stop    → stops the server this script started
set -euo pipefail
port="${MOTO_PORT:-5055}"
dir="${MOTO_DIR:-${TMPDIR:-/tmp}/bitbucket-automation-moto}"
pidfile="$dir/moto-$port.pid"
mkdir -p "$dir"

case "${1:-}" in
start)
  if ! command -v moto_server >/dev/null 2>&1; then
    python3 -m pip install --quiet 'moto[server]>=5'
  fi
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    echo "moto already running on 127.0.0.1:$port"; exit 0
  fi
  if curl -sf "http://127.0.0.1:$port/moto-api/" >/dev/null 2>&1; then
    # Someone else's server: use it, but do not take ownership (stop leaves it alone).
    echo "reusing the moto server already on 127.0.0.1:$port"; exit 0
  fi
  python3 "$(dirname "$0")/moto_serial.py" 127.0.0.1 "$port" >"$dir/moto-$port.log" 2>&1 &
  echo $! >"$pidfile"
  for _ in $(seq 1 100); do
    if curl -sf "http://127.0.0.1:$port/moto-api/" >/dev/null 2>&1; then
      echo "moto on 127.0.0.1:$port"; exit 0
    fi
    sleep 0.2
  done
  echo "moto did not start; log:" >&2; cat "$dir/moto-$port.log" >&2; exit 1
  ;;
stop)
  if [ -f "$pidfile" ]; then
    kill "$(cat "$pidfile")" 2>/dev/null || true
    rm -f "$pidfile"
  fi
  ;;
*)
  echo "usage: $0 start|stop" >&2; exit 2
  ;;
esac
