#!/usr/bin/env bash
# Installs what voxmill needs into ./.venv: system tools (ffmpeg; with --test also espeak-ng and
# the Japanese dictionary), torch (the CPU build when a local wheel is offered), then voxmill.
# Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
extras=""
[[ "${1:-}" == "--test" ]] && extras="[test]"

apt_need=()
command -v ffmpeg >/dev/null || apt_need+=(ffmpeg)
[[ -d /var/lib/mecab/dic/open-jtalk/naist-jdic ]] || apt_need+=(open-jtalk-mecab-naist-jdic)
if [[ -n "$extras" ]]; then
  command -v espeak-ng >/dev/null || apt_need+=(espeak-ng)
  # The fault suite's hosts: network namespaces, partitions and a skewed clock.
  command -v ip >/dev/null || apt_need+=(iproute2)
  command -v iptables >/dev/null || apt_need+=(iptables)
  [[ -f /usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1 ]] || apt_need+=(libfaketime)
fi
if ((${#apt_need[@]})); then
  echo "installing system packages: ${apt_need[*]}"
  sudo_=""; [[ $(id -u) -ne 0 ]] && sudo_="sudo"
  $sudo_ apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq --no-install-recommends "${apt_need[@]}" >/dev/null
fi

python=${PYTHON:-python3}
[[ -x .venv/bin/python ]] || "$python" -m venv .venv
pip_install() {
  # pip's exit status decides; its noise about unreachable extra indexes is filtered out.
  local log status=0
  log=$(mktemp)
  .venv/bin/python -m pip install -q --disable-pip-version-check "$@" >"$log" 2>&1 || status=$?
  grep -v "is ignored: it is neither" "$log" || true
  rm -f "$log"
  return $status
}
# torch first and on its own: a CPU host with a local CPU wheel must not pull the CUDA build.
.venv/bin/python -c "import torch" 2>/dev/null || pip_install "torch==2.13.0"
pip_install -e ".${extras}"
# resemblyzer declares the Python 2 era "typing" backport, which can shadow the standard library.
.venv/bin/python -m pip uninstall -q -y typing 2>/dev/null || true
.venv/bin/voxmill --help >/dev/null
