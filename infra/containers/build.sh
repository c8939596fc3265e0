#!/usr/bin/env bash
# Builds voxmill's images with podman.
#   infra/containers/build.sh            # the CPU image from a registry base (docker.io debian)
#   infra/containers/build.sh --offline  # no image registry: a debootstrap bookworm base first
#   infra/containers/build.sh --cuda     # also the sovits image (needs a registry for the CUDA base)
# The host's extra CA certificates (/usr/local/share/ca-certificates, e.g. a TLS-intercepting
# proxy's) are copied into the build so apt and pip inside it trust the same roots.
set -euo pipefail
cd "$(dirname "$0")/../.."
offline=false; cuda=false
for arg in "$@"; do
  case "$arg" in
    --offline) offline=true ;;
    --cuda) cuda=true ;;
    *) echo "usage: $0 [--offline] [--cuda]" >&2; exit 2 ;;
  esac
done
tag=${VOXMILL_IMAGE_TAG:-0.1.0}

ca=infra/containers/ca
find "$ca" -type f ! -name .keep -delete
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  cp /usr/local/share/ca-certificates/*.crt "$ca/"
fi

base_args=()
if $offline; then
  base=localhost/voxmill-base:bookworm
  if ! podman image exists "$base"; then
    root=$(mktemp -d)
    trap 'rm -rf "$root"' EXIT
    debootstrap --variant=minbase bookworm "$root" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
    cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/" 2>/dev/null || true
    tar -C "$root" -c . | podman import - "$base"
  fi
  base_args=(--build-arg "BASE_IMAGE=$base")
fi

podman build "${base_args[@]}" -f infra/containers/Containerfile -t "localhost/voxmill:$tag" .
if $cuda; then
  podman build -f infra/containers/Containerfile.cuda -t "localhost/voxmill-cuda:$tag" .
fi
find "$ca" -type f ! -name .keep -delete
