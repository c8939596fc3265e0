#!/usr/bin/env bash
# The deployment smoke test: builds the images, brings the offline compose topology up with podman
# (PostgreSQL, Redis, S3, migrate, API, the gpt, sovits and post pools on the CPU image, beat),
# writes tiny random models into the `models` volume, onboards the sample voice and renders a job
# over HTTP, fetches the audio and checks it decodes, then removes every container, the network
# and the volumes. Exits non-zero on any failure (after printing the failing services' logs).
#
#   infra/containers/podman-host.sh          # once per host: podman and its runtime (Debian)
#   infra/compose/smoke.sh                   # build + run (first build: ~30 min on 2 cores)
#   infra/compose/smoke.sh --no-build        # reuse the images already built
#   infra/compose/smoke.sh --keep            # leave the topology up afterwards (debugging)
#
# The services come from infra/compose/compose.yaml + compose.offline.yaml, turned into `podman
# run` arguments by infra/compose/podman_run.py (see there why not podman-compose). Environment:
# VOXMILL_SMOKE_PROJECT (voxmill-smoke), VOXMILL_SMOKE_PORT (18000: the API on 127.0.0.1),
# VOXMILL_SMOKE_TIMEOUT (900: seconds for the job), PYTHON (.venv/bin/python; needs PyYAML).
set -euo pipefail
cd "$(dirname "$0")/../.."
build=true; keep=false
for arg in "$@"; do
  case "$arg" in
    --no-build) build=false ;;
    --keep) keep=true ;;
    *) echo "usage: $0 [--no-build] [--keep]" >&2; exit 2 ;;
  esac
done
project=${VOXMILL_SMOKE_PROJECT:-voxmill-smoke}
port=${VOXMILL_SMOKE_PORT:-18000}
job_timeout=${VOXMILL_SMOKE_TIMEOUT:-900}
py=${PYTHON:-.venv/bin/python}
files=(-f infra/compose/compose.yaml -f infra/compose/compose.offline.yaml)
export VOXMILL_WEBHOOK_SECRET=${VOXMILL_WEBHOOK_SECRET:-smoke-$RANDOM$RANDOM$RANDOM}
export VOXMILL_PORT_8000=$port
image=${VOXMILL_IMAGE:-localhost/voxmill:0.1.0}
api=http://127.0.0.1:$port
work=$(mktemp -d)
t0=$SECONDS

say() { printf '[smoke %s +%4ds] %s\n' "$(date -u +%H:%M:%S)" "$((SECONDS - t0))" "$*"; }
die() { say "FAILED: $*"; exit 1; }

ids() { podman ps -aq --filter "label=io.podman.compose.project=$project"; }
down() {
  # A container that stops by itself while podman escalates to SIGKILL makes `rm` fail ("container
  # state improper: stopped"): try again, then insist that nothing of the project is left.
  local attempt
  for attempt in 1 2 3; do
    [[ -z $(ids) ]] && break
    podman rm --force --time 10 $(ids) >/dev/null 2>&1 || sleep 2
  done
  [[ -z $(ids) ]] || { echo "containers left: $(ids)" >&2; return 1; }
  podman volume ls -q --filter "name=^${project}_" | xargs -r podman volume rm --force >/dev/null
  ! podman network exists "$project" || podman network rm --force "$project" >/dev/null
}

finish() {
  local status=$?
  if [[ $status -ne 0 ]]; then
    for c in $(podman ps -a --format '{{.Names}}' --filter "label=io.podman.compose.project=$project"); do
      echo "----- $c ($(podman inspect -f '{{.State.Status}} exit={{.State.ExitCode}}' "$c")), last log lines:"
      podman logs --tail 25 "$c" 2>&1 || true
    done
  fi
  if $keep; then
    say "left up (--keep): project $project, API $api"
  else
    down
    say "down: containers, network and volumes of $project removed"
  fi
  rm -rf "$work"
  [[ $status -eq 0 ]] && say "PASSED in $((SECONDS - t0)) s" || say "exit $status"
  exit $status
}
trap finish EXIT

# Starts one service of the compose files (detached), in dependency order by the caller.
start() {
  local args
  mapfile -d '' args < <("$py" infra/compose/podman_run.py --project "$project" "${files[@]}" args "$1")
  podman run "${args[@]}" >/dev/null
  say "started $1"
}

# Runs a service's compose healthcheck until it passes (podman has no scheduler for it here).
healthy() {
  local service=$1 limit=${2:-180} started=$SECONDS
  until podman healthcheck run "$project-$service" >/dev/null 2>&1; do
    [[ $(podman inspect -f '{{.State.Running}}' "$project-$service") == true ]] || die "$service exited"
    (( SECONDS - started < limit )) || die "$service not healthy after $limit s"
    sleep 2
  done
  say "$service healthy ($((SECONDS - started)) s)"
}

# A JSON field of a file, by a Python expression on `d`.
field() { "$py" -c "import json,sys; d=json.load(open(sys.argv[1])); print($2)" "$1"; }

if $build; then
  say "building images (infra/containers/build.sh --offline)"
  b=$SECONDS
  infra/containers/build.sh --offline
  say "images built in $((SECONDS - b)) s"
fi
for img in "$image" localhost/voxmill-offline-postgres:bookworm localhost/voxmill-offline-redis:bookworm \
  localhost/voxmill-offline-s3:bookworm; do
  podman image exists "$img" || die "image $img missing: run infra/containers/build.sh --offline"
done

down  # leftovers of an interrupted run
up=$SECONDS
podman network create "$project" >/dev/null
say "network $project created"

start postgres; start redis; start s3
healthy postgres; healthy redis; healthy s3

podman run --rm --no-healthcheck --label "io.podman.compose.project=$project" -v "${project}_models:/models" "$image" \
  voxmill models make-tiny /models
say "tiny models written into volume ${project}_models"

start migrate
[[ $(podman wait "$project-migrate") == 0 ]] || die "migrate failed"
say "migrate done (db upgrade, storage init)"

for service in api gpt-worker sovits-worker post-worker beat; do start "$service"; done
healthy api 240
for service in gpt-worker sovits-worker post-worker; do healthy "$service" 300; done
[[ $(podman inspect -f '{{.State.Running}}' "$project-beat") == true ]] || die "beat exited"
say "topology up in $((SECONDS - up)) s"

# Onboard the sample voice over HTTP.
jobt=$SECONDS
curl -fsS -o "$work/voice.json" -X POST "$api/v1/voices" \
  -F "audio=@examples/voice/sample.wav" -F language=en -F "transcript=<examples/voice/sample.txt" -F name=smoke \
  || die "voice upload refused: $(cat "$work/voice.json" 2>/dev/null)"
voice=$(field "$work/voice.json" 'd["id"]')
say "voice $voice uploaded"
while :; do
  curl -fsS -o "$work/voice.json" "$api/v1/voices/$voice"
  status=$(field "$work/voice.json" 'd["status"]')
  [[ $status == ready ]] && break
  [[ $status == failed ]] && die "voice failed: $(cat "$work/voice.json")"
  (( SECONDS - jobt < job_timeout )) || die "voice still $status after $job_timeout s"
  sleep 2
done
say "voice $voice ready ($((SECONDS - jobt)) s)"

# Submit a job, wait for it, fetch the audio.
"$py" -c 'import json,sys; print(json.dumps({"text": sys.argv[1], "voice_id": sys.argv[2], "language": "en"}))' \
  "Containers deliver this sentence. The compose topology renders it, segment by segment." "$voice" \
  > "$work/job-in.json"
curl -fsS -o "$work/job.json" -X POST "$api/v1/jobs" -H 'Content-Type: application/json' \
  --data-binary "@$work/job-in.json" || die "job refused"
job=$(field "$work/job.json" 'd["id"]')
say "job $job submitted"
jobs_started=$SECONDS
while :; do
  curl -fsS -o "$work/job.json" "$api/v1/jobs/$job"
  status=$(field "$work/job.json" 'd["status"]')
  case $status in
    succeeded) break ;;
    failed|cancelled|canceled) die "job $status: $(cat "$work/job.json")" ;;
  esac
  (( SECONDS - jobs_started < job_timeout )) || die "job still $status after $job_timeout s"
  sleep 2
done
say "job $job succeeded ($((SECONDS - jobs_started)) s; segments $(field "$work/job.json" 'd["progress"]["segments_done"]')/$(field "$work/job.json" 'd["progress"]["segments_total"]'))"

curl -fsS -o "$work/audio.wav" "$api/v1/jobs/$job/audio" || die "audio fetch failed"
bytes=$(stat -c %s "$work/audio.wav")
(( bytes > 44 )) || die "audio is empty ($bytes bytes)"
probe=$(podman run --rm --no-healthcheck --label "io.podman.compose.project=$project" -v "$work/audio.wav:/tmp/a.wav:ro" "$image" \
  ffprobe -v error -show_entries stream=codec_name,sample_rate,channels:format=duration -of compact=p=0:nk=0 /tmp/a.wav) \
  || die "ffprobe cannot decode the audio"
duration=$(grep -o 'duration=[0-9.]*' <<<"$probe" | cut -d= -f2)
awk -v d="$duration" 'BEGIN { exit !(d > 0) }' || die "audio has no duration: $probe"
say "audio: $bytes bytes, $(tr '\n' ' ' <<<"$probe")"
say "voice + job over HTTP in $((SECONDS - jobt)) s"
