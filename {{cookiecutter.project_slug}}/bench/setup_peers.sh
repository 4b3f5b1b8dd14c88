#!/usr/bin/env bash
# Create the virtualenv holding the comparison peers of the layer benchmark (bench/layer_bench.py) and of the
# end-to-end WebSocket benchmark (bench/ws_load.py: python-socketio, encode/broadcaster, served by gunicorn+uvicorn).
# Usage: bash bench/setup_peers.sh [VENV_DIR]   (default: $PEERS_VENV or /work/.venv-peers)
# The peers live apart from the project so their pins (Django, channels, old clients) cannot clash with ours.
set -euo pipefail

VENV="${1:-${PEERS_VENV:-/work/.venv-peers}}"
PYTHON="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet \
    "fastapi-websockets[redis,postgresql,nats,rabbitmq]==0.1.0" \
    "channels-redis==4.3.*" \
    "channels-postgres" \
    "channels-rabbitmq" \
    "django>=4.2" \
    "redis>=5" "asyncpg" "nats-py" "aio-pika" "msgpack" \
    "python-socketio>=5.11" "broadcaster[redis]==0.3.*" "fastapi" "uvicorn" "gunicorn" "websockets"
"$VENV/bin/python" -m pip list --format=freeze | grep -iE "fastapi|channels|django|redis|asyncpg|nats|aio-pika|aiormq|psycopg|socketio|engineio|broadcaster|uvicorn|gunicorn" || true
echo "peers ready in $VENV"
