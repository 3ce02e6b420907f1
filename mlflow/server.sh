#!/usr/bin/env bash
# Start a shared MLflow tracking server for PopSteer sweeps.
#   bash mlflow/server.sh                     # 127.0.0.1:5000, SQLite store mlflow/mlflow.db
#   MLFLOW_BACKEND_STORE_URI=postgresql://user:pass@db:5432/mlflow bash mlflow/server.sh
#   MLFLOW_HOST=0.0.0.0 bash mlflow/server.sh # every interface: only behind authentication
# Environment: MLFLOW_HOST (127.0.0.1), MLFLOW_PORT (5000), MLFLOW_BACKEND_STORE_URI
# (sqlite:///<repo>/mlflow/mlflow.db), MLFLOW_ARTIFACTS_DESTINATION (<repo>/mlflow/artifacts).
# Clients: export MLFLOW_TRACKING_URI=http://127.0.0.1:5000 (the sweep runner reads it).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(dirname "$HERE")"
HOST="${MLFLOW_HOST:-127.0.0.1}"
PORT="${MLFLOW_PORT:-5000}"
BACKEND="${MLFLOW_BACKEND_STORE_URI:-sqlite:///$HERE/mlflow.db}"
ARTIFACTS="${MLFLOW_ARTIFACTS_DESTINATION:-$HERE/artifacts}"
MLFLOW="${MLFLOW_BIN:-$ROOT/.venv/bin/mlflow}"
[ -x "$MLFLOW" ] || MLFLOW=mlflow

case "$HOST" in
  127.0.0.1|localhost|::1) ;;
  *) echo "warning: binding MLflow to $HOST exposes an unauthenticated server (anyone who can reach" \
          "$HOST:$PORT can read and delete runs). Put authentication in front of it (a reverse proxy" \
          "with auth, or mlflow's --app-name basic-auth) and restrict the network." >&2 ;;
esac
case "$BACKEND" in
  postgresql*) python3 -c "import psycopg2" 2>/dev/null || "$ROOT/.venv/bin/python" -c "import psycopg2" 2>/dev/null \
                 || echo "warning: a PostgreSQL backend needs psycopg2 (pip install psycopg2-binary)" >&2 ;;
  sqlite:///*) mkdir -p "$(dirname "${BACKEND#sqlite:///}")" ;;
esac
case "$ARTIFACTS" in
  *://*) ;;
  *) mkdir -p "$ARTIFACTS" ;;
esac

exec "$MLFLOW" server --host "$HOST" --port "$PORT" \
  --backend-store-uri "$BACKEND" --artifacts-destination "$ARTIFACTS" "$@"
