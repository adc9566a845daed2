#!/usr/bin/env bash
# The main job on its built-in default: the simulated robot, the scene memory and the MPC
# planner (shipped world model) on one DDS graph reach a pose and push the cube; the report,
# plot and animation go to output/demo/. Options go straight through (see --help).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck disable=SC1091
source "$root/scripts/env.sh"
cd "$root"
exec python -m sim_robot.demo --output output/demo "$@"
