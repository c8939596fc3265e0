#!/usr/bin/env bash
# The README's second command: install what the tests need, make sure PostgreSQL and Redis run,
# then run the whole suite against them. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash infra/bootstrap.sh --test
bash infra/services.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec .venv/bin/python -m pytest -q "$@"
