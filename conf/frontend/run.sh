#!/bin/sh
# One command for the whole example: a single-machine cluster (conf/forseti.toml) and the
# asyncio HTTP front-end on http://127.0.0.1:8080/ (sessions and chat). Ctrl-C stops both.
#   sh conf/frontend/run.sh
#   curl -d hello http://127.0.0.1:8080/chat/alice; curl http://127.0.0.1:8080/chat/alice
set -eu
here=$(cd "$(dirname "$0")" && pwd)
forsetid --config "$here/../forseti.toml" &
daemon=$!
trap 'kill $daemon 2>/dev/null; wait $daemon 2>/dev/null' EXIT INT TERM
python3 "$here/frontend.py" --endpoint tcp://127.0.0.1:7072 --port "${PORT:-8080}"
