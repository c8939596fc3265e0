#!/usr/bin/env bash
# Prepares a Debian bookworm host to build and run voxmill's containers with rootful podman,
# including hosts without systemd (a sandbox VM with cgroups v1 + a cgroup2 mount): installs
# podman and what it needs, and podman-host.conf as /etc/containers/containers.conf (an existing
# one is kept as containers.conf.orig). Run as root, once.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
apt-get update
# runc: crun 1.8 cannot run on the hybrid cgroup layout (see podman-host.conf);
# netavark + aardvark-dns: the compose network, with service names resolvable;
# iptables: netavark's NAT and port forwarding; debootstrap: the offline base image.
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
  podman runc netavark aardvark-dns iptables debootstrap
conf=/etc/containers/containers.conf
if [[ -e $conf && ! -e $conf.orig ]] && ! cmp -s "$conf" "$here/podman-host.conf"; then
  cp "$conf" "$conf.orig"
fi
install -m 0644 "$here/podman-host.conf" "$conf"
podman run --rm --network none "${1:-localhost/voxmill-base:bookworm}" true 2>/dev/null \
  && echo "podman runs containers" \
  || echo "podman installed; build the base (infra/containers/build.sh --offline) to try a container"
