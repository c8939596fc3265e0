#!/usr/bin/env bash
# Builds voxmill's images with podman.
#   infra/containers/build.sh            # the CPU image from a registry base (docker.io debian)
#   infra/containers/build.sh --offline  # no image registry: a debootstrap bookworm base first,
#                                        # and the offline compose services' images (postgres,
#                                        # redis, s3, prometheus) on that base
#   infra/containers/build.sh --cuda     # also the sovits image (needs a registry for the CUDA base)
# The host's extra CA certificates (/usr/local/share/ca-certificates, e.g. a TLS-intercepting
# proxy's) are copied into the build so apt and pip inside it trust the same roots.
# Environment:
#   VOXMILL_IMAGE_TAG     tag of the voxmill images (0.1.0)
#   VOXMILL_WHEELS_DIR    a folder of wheels mounted read-only at /wheels for pip (default
#                         /opt/wheels when it holds a torch CPU wheel: then TORCH_SPEC becomes
#                         that wheel's version, and pip does not pull PyPI's CUDA build)
#   TORCH_SPEC            the torch requirement installed first (torch==2.13.0)
#   PIP_EXTRA_INDEX_URL   passed to the torch install, e.g. https://download.pytorch.org/whl/cpu
#   DEBIAN_MIRROR         debootstrap's mirror (http://deb.debian.org/debian)
# Images are written in docker format: the OCI format has no HEALTHCHECK and podman drops it.
#   BUILD_NETWORK         podman build --network (host: RUN steps use the host's network, so no
#                         bridge, NAT or DNS forwarder is needed while building)
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
network=${BUILD_NETWORK:-host}

ca=infra/containers/ca
cleanup() { find "$ca" -type f ! -name .keep -delete; [[ -z ${root:-} ]] || rm -rf "$root"; }
trap cleanup EXIT
cleanup
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  cp /usr/local/share/ca-certificates/*.crt "$ca/"
fi

base_args=()
if $offline; then
  base=localhost/voxmill-base:bookworm
  if ! podman image exists "$base"; then
    root=$(mktemp -d)
    debootstrap --variant=minbase bookworm "$root" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
    tar -C "$root" -c . | podman import - "$base"
    rm -rf "$root"; root=
  fi
  base_args=(--build-arg "BASE_IMAGE=$base")
fi

torch_args=()
wheels=${VOXMILL_WHEELS_DIR:-}
if [[ -z $wheels ]] && compgen -G "/opt/wheels/torch-*+cpu-*.whl" >/dev/null; then wheels=/opt/wheels; fi
if [[ -n $wheels ]]; then
  torch_args+=(--volume "$(realpath "$wheels"):/wheels:ro" --build-arg PIP_FIND_LINKS=/wheels)
  cpu_wheel=$(compgen -G "$wheels/torch-*+cpu-*.whl" | sort -V | tail -1 || true)
  if [[ -z ${TORCH_SPEC:-} && -n $cpu_wheel ]]; then
    TORCH_SPEC="torch==$(basename "$cpu_wheel" | cut -d- -f2)"
  fi
fi
[[ -z ${TORCH_SPEC:-} ]] || torch_args+=(--build-arg "TORCH_SPEC=$TORCH_SPEC")
[[ -z ${PIP_EXTRA_INDEX_URL:-} ]] || torch_args+=(--build-arg "PIP_EXTRA_INDEX_URL=$PIP_EXTRA_INDEX_URL")

podman build --format docker --network "$network" "${base_args[@]}" "${torch_args[@]}" \
  -f infra/containers/Containerfile -t "localhost/voxmill:$tag" .
if $offline; then
  for svc in postgres redis s3 prometheus; do
    podman build --format docker --network "$network" "${base_args[@]}" \
      -f "infra/compose/offline/$svc.Containerfile" -t "localhost/voxmill-offline-$svc:bookworm" .
  done
fi
if $cuda; then
  podman build --format docker --network "$network" -f infra/containers/Containerfile.cuda -t "localhost/voxmill-cuda:$tag" .
fi
