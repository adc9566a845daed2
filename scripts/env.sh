# Source this to use the built package: the virtual environment plus colcon's install space.
_wmp_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# The activation scripts read unset variables; allow that while sourcing them.
case $- in *u*) _wmp_nounset=1; set +u ;; *) _wmp_nounset= ;; esac
# shellcheck disable=SC1091
source "$_wmp_root/.colcon/venv/bin/activate"
export AMENT_PREFIX_PATH="$VIRTUAL_ENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
# shellcheck disable=SC1091
source "$_wmp_root/.colcon/install/setup.bash"
export MUJOCO_GL="${MUJOCO_GL:-egl}"
# Camera frames larger than Fast DDS's default shared-memory segment would be dropped.
export FASTRTPS_DEFAULT_PROFILES_FILE="${FASTRTPS_DEFAULT_PROFILES_FILE:-$_wmp_root/config/fastdds.xml}"
# Torch's OpenMP threads spin while waiting; with nodes sharing two cores that stalls them.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
[ -n "$_wmp_nounset" ] && set -u
unset _wmp_root _wmp_nounset
