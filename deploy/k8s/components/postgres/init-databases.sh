#!/bin/bash
# Runs once, when the postgres image initialises an empty data directory (/docker-entrypoint-initdb.d).
# Creates one role and one database per service from the very URLs the services connect with
# (secret modelhub-database), so a password lives in exactly one place. Each database gets pgvector,
# as in the local stack, and only its own role may connect to it: no service reads another's tables.
#
# Later password changes are not picked up here (the data directory exists by then): run
# ALTER ROLE ... PASSWORD ... yourself and update the secret, as docs/deploy.md describes.
set -euo pipefail

create_service_database() {
  local var="$1" url="${!1:-}"
  # postgresql://USER:PASSWORD@HOST[:PORT]/DBNAME[?params]; the password must not contain '@', '/'
  # or ':' unescaped (URL syntax), and is not percent-decoded here: keep it URL-safe.
  local pattern='^postgres(ql)?://([^:/@]+):([^@]+)@[^/]+/([^?]+)'
  if [[ ! "$url" =~ $pattern ]]; then
    echo "init-databases: $var is not postgresql://user:password@host:port/dbname" >&2
    return 1
  fi
  local role="${BASH_REMATCH[2]}" password="${BASH_REMATCH[3]}" database="${BASH_REMATCH[4]}"
  echo "init-databases: creating role and database $database"
  # psql variables (:"name" identifiers, :'value' literals) quote what comes from the secret.
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    -v role="$role" -v password="$password" -v database="$database" <<'SQL'
CREATE ROLE :"role" LOGIN PASSWORD :'password';
CREATE DATABASE :"database" OWNER :"role";
REVOKE ALL ON DATABASE :"database" FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE :"database" TO :"role";
\connect :"database"
CREATE EXTENSION IF NOT EXISTS vector;
SQL
}

for var in REGISTRY_DATABASE_URL PULLER_DATABASE_URL RAG_DATABASE_URL GATEWAY_DATABASE_URL; do
  create_service_database "$var"
done
