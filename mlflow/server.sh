#!/usr/bin/env bash
# Start a shared MLflow tracking server for PopSteer sweeps.
#   bash mlflow/server.sh                     # 127.0.0.1:5000, SQLite store mlflow/mlflow.db
#   MLFLOW_BACKEND_STORE_URI=postgresql://user:pass@db:5432/mlflow bash mlflow/server.sh
#   MLFLOW_HOST=0.0.0.0 bash mlflow/server.sh # every interface: only behind authentication
#   MLFLOW_AUTH_ADMIN_PASSWORD=... bash mlflow/server.sh --auth   # MLflow's basic-auth app (README: Authentication)
# Environment: MLFLOW_HOST (127.0.0.1), MLFLOW_PORT (5000), MLFLOW_BACKEND_STORE_URI
# (sqlite:///<repo>/mlflow/mlflow.db), MLFLOW_ARTIFACTS_DESTINATION (<repo>/mlflow/artifacts).
# With --auth: MLFLOW_AUTH_ADMIN_PASSWORD (required, >= 12 characters; MLflow reads it from the
# environment, so it is written nowhere), MLFLOW_AUTH_ADMIN_USERNAME (admin), MLFLOW_AUTH_DATABASE_URI
# (basic_auth.db beside a SQLite store, else <repo>/mlflow/basic_auth.db), MLFLOW_AUTH_DEFAULT_PERMISSION
# (READ), MLFLOW_AUTH_CACHE_TTL_SECONDS (0: every request checks its password hash),
# MLFLOW_FLASK_SERVER_SECRET_KEY (CSRF key; random per start when unset), MLFLOW_AUTH_CONFIG_PATH
# (your own ini instead of the generated one). Every other argument goes to `mlflow server`.
# Clients: export MLFLOW_TRACKING_URI=http://127.0.0.1:5000 (the sweep runner reads it), and with
# --auth MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (the MLflow client sends them).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(dirname "$HERE")"
HOST="${MLFLOW_HOST:-127.0.0.1}"
PORT="${MLFLOW_PORT:-5000}"
BACKEND="${MLFLOW_BACKEND_STORE_URI:-sqlite:///$HERE/mlflow.db}"
ARTIFACTS="${MLFLOW_ARTIFACTS_DESTINATION:-$HERE/artifacts}"
MLFLOW="${MLFLOW_BIN:-$ROOT/.venv/bin/mlflow}"
[ -x "$MLFLOW" ] || MLFLOW=mlflow

AUTH=0
ARGS=()
for arg in "$@"; do
  if [ "$arg" = "--auth" ]; then AUTH=1; else ARGS+=("$arg"); fi
done
if [ "$AUTH" = 1 ] && [ -z "${MLFLOW_AUTH_ADMIN_PASSWORD:-}" ]; then
  echo "error: --auth needs MLFLOW_AUTH_ADMIN_PASSWORD in the environment (the admin's password, >= 12 characters)" >&2
  exit 2
fi

case "$HOST" in
  127.0.0.1|localhost|::1) ;;
  *) if [ "$AUTH" = 1 ]; then
       echo "warning: binding MLflow to $HOST: basic auth asks every request for a password, but plain HTTP" \
            "sends it readable to anyone on the path. Put TLS in front (a reverse proxy) and restrict the network." >&2
     else
       echo "warning: binding MLflow to $HOST exposes an unauthenticated server (anyone who can reach" \
            "$HOST:$PORT can read and delete runs). Start it with --auth (MLflow's basic-auth app) or put" \
            "a reverse proxy with auth in front of it, and restrict the network." >&2
     fi ;;
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

if [ "$AUTH" = 1 ]; then
  # MLflow's basic-auth app: an ini (MLFLOW_AUTH_CONFIG_PATH) names the user database and the admin;
  # the admin's password stays in the environment (MLflow reads MLFLOW_AUTH_ADMIN_PASSWORD itself).
  case "$BACKEND" in
    sqlite:///*) AUTH_DIR="$(dirname "${BACKEND#sqlite:///}")" ;;
    *) AUTH_DIR="$HERE" ;;
  esac
  AUTH_DB="${MLFLOW_AUTH_DATABASE_URI:-sqlite:///$AUTH_DIR/basic_auth.db}"
  case "$AUTH_DB" in
    sqlite:///*) AUTH_DIR="$(dirname "${AUTH_DB#sqlite:///}")"; mkdir -p "$AUTH_DIR" ;;
  esac
  if [ -z "${MLFLOW_AUTH_CONFIG_PATH:-}" ]; then
    INI="$AUTH_DIR/basic_auth.ini"
    # mode 600 from the start (umask), replaced whole; it holds the database URI, which may carry a password
    (umask 077 && printf '%s\n' "[mlflow]" "default_permission = ${MLFLOW_AUTH_DEFAULT_PERMISSION:-READ}" \
       "database_uri = $AUTH_DB" "admin_username = ${MLFLOW_AUTH_ADMIN_USERNAME:-admin}" \
       "authorization_function = mlflow.server.auth:authenticate_request_basic_auth" \
       "auth_cache_ttl_seconds = ${MLFLOW_AUTH_CACHE_TTL_SECONDS:-0}" > "$INI.tmp.$$")
    mv -f "$INI.tmp.$$" "$INI"
    export MLFLOW_AUTH_CONFIG_PATH="$INI"
  fi
  if [ -z "${MLFLOW_FLASK_SERVER_SECRET_KEY:-}" ]; then  # one key for all workers of this server
    MLFLOW_FLASK_SERVER_SECRET_KEY="$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')"
    export MLFLOW_FLASK_SERVER_SECRET_KEY
  fi
  ARGS=(--app-name basic-auth "${ARGS[@]}")
  umask 077  # the stores it creates (the user database holds password hashes) readable by this user only
fi

exec "$MLFLOW" server --host "$HOST" --port "$PORT" \
  --backend-store-uri "$BACKEND" --artifacts-destination "$ARTIFACTS" "${ARGS[@]}"
