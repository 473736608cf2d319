#!/usr/bin/env bash
# The Debian 12 base image, made from Debian's own packages: no container registry is needed (none may be
# reachable), only a Debian mirror. debootstrap builds a minimal root file system, `podman import` makes it an
# image. Idempotent: an image of that name already there is kept.
#
#   containers/debian-base.sh [IMAGE]          # default localhost/candlecast-debian:bookworm
#   DEBIAN_MIRROR=http://... containers/debian-base.sh
set -euo pipefail

image=${1:-localhost/candlecast-debian:bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}

if podman image exists "$image"; then
  echo "base image $image: present"
  exit 0
fi

root=$(mktemp -d /var/tmp/candlecast-debootstrap.XXXXXX)
trap 'rm -rf "$root"' EXIT
echo "base image $image: debootstrap bookworm from $mirror (a few minutes)"
debootstrap --variant=minbase --include=ca-certificates bookworm "$root" "$mirror" >"$root.log" 2>&1 \
  || { tail -n 30 "$root.log" >&2; rm -f "$root.log"; exit 1; }
rm -f "$root.log"
cat >"$root/etc/apt/sources.list" <<SOURCES
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb $security bookworm-security main
SOURCES
# What a base image leaves out: downloaded packages, package lists (the build updates them), device nodes.
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/tmp/*
tar -C "$root" --numeric-owner --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' -c . \
  | podman import --change 'CMD ["/bin/bash"]' --change 'ENV LANG=C.UTF-8' \
      --message "debootstrap bookworm (minbase) from $mirror" - "$image" >/dev/null
echo "base image $image: imported ($(podman image inspect --format '{{.Size}}' "$image") bytes)"
