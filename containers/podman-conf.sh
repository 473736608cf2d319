#!/usr/bin/env bash
# Podman's settings for the project's container targets (the Makefile points CONTAINERS_CONF at the file written
# here; the machine's own /etc/containers is left alone):
# - runc as the OCI runtime: Debian's default, crun, refuses a host whose cgroups are a v1/v2 hybrid ("cgroups in
#   hybrid mode not supported"), as on this project's machines; runc runs on either.
# - ulimits the host allows: podman asks for 1048576 open files by default, and a container whose limits exceed
#   the host's hard limit does not start ("error setting rlimits ... operation not permitted").
#
#   containers/podman-conf.sh FILE
set -euo pipefail

file=${1:?the file to write}
nofile=$(ulimit -Hn)
[ "$nofile" = unlimited ] || [ "$nofile" -gt 65536 ] && nofile=65536
nproc=$(ulimit -Hu)
[ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ] && nproc=32768
mkdir -p "$(dirname "$file")"
cat >"$file.tmp" <<CONF
# Written by containers/podman-conf.sh for this host; the project's container targets use it (CONTAINERS_CONF).
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]

[engine]
runtime = "runc"
CONF
mv "$file.tmp" "$file"
