#!/usr/bin/env bash
# After `podman-compose up -d`: wait until airflow-init has finished (exit 0) and every service with a
# healthcheck answers (podman runs healthchecks from systemd timers, absent in many containers and CI runners:
# they are run here by hand), then say where the UI and the API are. Fails naming the service and its last log.
#
#   containers/compose-wait.sh PROJECT [TIMEOUT_S]
set -euo pipefail

project=${1:?project name}
timeout=${2:-900}
deadline=$((SECONDS + timeout))

container_of() {
  podman ps -a --filter "label=com.docker.compose.project=$project" \
    --filter "label=com.docker.compose.service=$1" --format '{{.Names}}' | head -n 1
}

fail() {
  echo "compose: $1" >&2
  [ -n "${2:-}" ] && podman logs --tail 40 "$2" >&2 || true
  exit 1
}

init=$(container_of airflow-init)
[ -n "$init" ] || fail "no airflow-init container in project $project"
while [ "$(podman inspect --format '{{.State.Status}}' "$init")" != exited ]; do
  [ $SECONDS -lt $deadline ] || fail "airflow-init still running after ${timeout}s" "$init"
  sleep 3
done
code=$(podman inspect --format '{{.State.ExitCode}}' "$init")
[ "$code" = 0 ] || fail "airflow-init exited with $code" "$init"
echo "compose: airflow-init done (metadata migrated, Connections and pools written)"

for service in mariadb postgres redis airflow-apiserver api; do
  name=$(container_of "$service")
  [ -n "$name" ] || fail "no $service container in project $project"
  until podman healthcheck run "$name" >/dev/null 2>&1; do
    [ "$(podman inspect --format '{{.State.Status}}' "$name")" = running ] || fail "$service is not running" "$name"
    [ $SECONDS -lt $deadline ] || fail "$service not healthy after ${timeout}s" "$name"
    sleep 3
  done
  echo "compose: $service healthy"
done
apiserver=$(container_of airflow-apiserver)
until podman exec "$apiserver" python -m candlecast.container health airflow; do
  [ $SECONDS -lt $deadline ] || fail "Airflow's scheduler, DAG processor or triggerer not healthy after ${timeout}s" \
    "$(container_of airflow-scheduler)"
  sleep 3
done
echo "compose: Airflow healthy (metadata database, scheduler, DAG processor, triggerer)"
