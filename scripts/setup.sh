#!/usr/bin/env bash
# One-command environment: a virtual environment with pinned ROS 2 Jazzy wheels, PyTorch,
# MuJoCo and the rest, then a colcon build of this package. Idempotent: a second run only
# rebuilds what changed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# The venv lives outside the source tree: CMake refuses exported include paths (numpy's)
# that lie inside the package's source directory.
venv="${WMP_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/world_model_planning/venv}"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
  echo "[setup] creating $venv"
  mkdir -p "$(dirname "$venv")"
  "$python" -m venv "$venv"
fi
py="$venv/bin/python"

# Reinstall only when a requirements file changed.
stamp="$venv/.requirements.sha256"
want="$(cat requirements-ros.txt requirements.txt | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[setup] installing Python packages (several minutes on a fresh machine)"
  # Torch first and pinned, so nothing later pulls another build: the CPU wheel comes from the
  # local wheel cache where there is one, a GPU machine gets the CUDA build of that version.
  pip_install() {  # pip, without the notices about absent local index folders
    "$py" -m pip install --quiet --disable-pip-version-check "$@" 2> >(grep -v "^WARNING: Location" >&2)
  }
  pip_install torch==2.13.0
  pip_install -r requirements-ros.txt -r requirements.txt
  echo "$want" > "$stamp"
fi

# The Jazzy wheels' exported CMake targets name include paths of the machine they were built
# on; CMake's generate step needs them to exist.
pyinc="$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
npinc="$("$py" -c 'import numpy; print(numpy.get_include())')"
link_path() {  # link_path TARGET LINK
  [ -e "$2" ] && return 0
  if ! mkdir -p "$(dirname "$2")" 2>/dev/null || ! ln -sfn "$1" "$2" 2>/dev/null; then
    echo "[setup] error: cannot create $2 -> $1 (needs root once: sudo $0)" >&2
    exit 1
  fi
}
link_path "$pyinc" /opt/python/cp311-cp311/include/python3.11
link_path "$npinc" /opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include

# MuJoCo renders off-screen through EGL (Mesa on the CPU).
if ! ldconfig -p | grep -q 'libEGL.so.1'; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq libegl1 libgl1-mesa-dri >/dev/null
  else
    echo "[setup] error: libEGL missing; install libegl1 and libgl1-mesa-dri" >&2; exit 1
  fi
fi

echo "[setup] colcon build"
# shellcheck disable=SC1091
source "$venv/bin/activate"
export CMAKE_PREFIX_PATH="$VIRTUAL_ENV" AMENT_PREFIX_PATH="$VIRTUAL_ENV"
mkdir -p .colcon
if ! colcon --log-base .colcon/log build --base-paths "$root" --build-base .colcon/build \
    --install-base .colcon/install --symlink-install \
    --cmake-args -DPython3_EXECUTABLE="$py" -DBUILD_TESTING=OFF > .colcon/build.log 2>&1; then
  cat .colcon/build.log >&2
  echo "[setup] error: colcon build failed (log above, also in .colcon/build.log)" >&2
  exit 1
fi
ln -sfn "$venv" "$root/.colcon/venv"
echo "[setup] done: source scripts/env.sh to use the package"
