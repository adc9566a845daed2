#!/usr/bin/env bash
# Run the whole test suite (sets the environment up first if needed; idempotent).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
# shellcheck disable=SC1091
source "$root/scripts/env.sh"
cd "$root"
exec python -m pytest -q -p no:cacheprovider "$@"
