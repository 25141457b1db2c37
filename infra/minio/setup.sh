#!/bin/sh
# MinIO buckets, policies and users of the motops stack; run by compose's `create-buckets` job
# (minio/mc image, this folder mounted at /minio), or by hand against any MinIO with `mc`:
#
#   MINIO_URL=https://minio.example.internal:9000 MINIO_ROOT_USER=... MINIO_ROOT_PASSWORD=... \
#   MINIO_MLFLOW_PASSWORD=... MINIO_PUBLISHER_PASSWORD=... MINIO_DEVICE_PASSWORD=... sh infra/minio/setup.sh
#
# Idempotent: re-running it re-creates the policies and sets the users' passwords again (how a
# password is rotated). Users and what they may do (policy files next to this script):
#   mlflow     mlflow-artifacts.json  the MLflow server's artifact proxy: bucket mlflow only
#   publisher  fleet-publish.json     the Prefect worker: writes releases + TUF metadata to motops-fleet
#              dvc-readwrite.json     ... and pushes/pulls the DVC remote (bucket dvc)
#   device     fleet-read.json        edge agents: GET (and list) motops-fleet/engines/*, nothing else
# The root user stays with MinIO and this job; no service is given it.
set -eu

: "${MINIO_ROOT_USER:?set MINIO_ROOT_USER}"
: "${MINIO_ROOT_PASSWORD:?set MINIO_ROOT_PASSWORD}"
: "${MINIO_MLFLOW_PASSWORD:?set MINIO_MLFLOW_PASSWORD (secret key of the MinIO user mlflow)}"
: "${MINIO_PUBLISHER_PASSWORD:?set MINIO_PUBLISHER_PASSWORD (secret key of the MinIO user publisher)}"
: "${MINIO_DEVICE_PASSWORD:?set MINIO_DEVICE_PASSWORD (secret key of the MinIO user device)}"
POLICIES="${POLICIES:-$(dirname "$0")}"

mc alias set local "${MINIO_URL:-http://minio:9000}" "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null

mc mb --ignore-existing local/mlflow local/dvc local/motops-fleet
mc version enable local/motops-fleet
mc ilm rule add --expire-delete-marker --noncurrent-expire-days 30 local/motops-fleet || true

for policy in fleet-read fleet-publish mlflow-artifacts dvc-readwrite; do
  mc admin policy create local "$policy" "$POLICIES/$policy.json"
done

# user password policy...: create (or re-key) the user, then attach the policies it lacks.
user() {
  name="$1"; secret="$2"; shift 2
  mc admin user add local "$name" "$secret" >/dev/null
  for policy in "$@"; do
    if ! mc admin user info local "$name" | grep -q "$policy"; then
      mc admin policy attach local "$policy" --user "$name"
    fi
  done
}
user mlflow "$MINIO_MLFLOW_PASSWORD" mlflow-artifacts
user publisher "$MINIO_PUBLISHER_PASSWORD" fleet-publish dvc-readwrite
user device "$MINIO_DEVICE_PASSWORD" fleet-read

echo "minio ready: buckets mlflow dvc motops-fleet; users mlflow, publisher, device (read-only on motops-fleet)"
