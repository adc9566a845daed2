#!/usr/bin/env bash
# The main job on its built-in default: drive the simulated robot with the scripted
# exploration policy and record episodes as rosbag2 bags under output/.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck disable=SC1091
source "$root/scripts/env.sh"
cd "$root"
exec python -m sim_robot.collect --output output/episodes "$@"
