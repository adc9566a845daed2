#!/usr/bin/env bash
# The GPU figures of every hot path in one run, for a CUDA machine that has PyTorch but
# neither ROS 2 nor a package index (a borrowed benchmark machine).
#
#   bash benchmarks/gpu.sh fetch            # here, with PyPI and Debian reachable: the wheels
#                                           # (gsplat, MuJoCo, rosbags) into .whl/ and the
#                                           # EGL libraries MuJoCo renders with into .gl/
#   bash benchmarks/gpu.sh run OUT [TAG]    # there, from the repository root, with .whl/ and
#                                           # .gl/ copied along: OUT/<benchmark>_<TAG>.json
#                                           # and .log for planner, world_model (timings),
#                                           # scene_memory and gsplat_queries
#
# Each benchmark runs under its own time limit (GPU_BENCH_TIMEOUT, default 240 s), so one
# that hangs does not cost the others. GPU_BENCH_DEVICE (default cuda) and GPU_BENCH_ARGS
# (say --quick) let the same run be tried on the CPU first. Copy the JSON files worth keeping to benchmarks/results/.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

fetch() {
    set -e
    local pip_args=(--no-deps --only-binary=:all: --python-version 3.12 --implementation cp
                    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
                    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
                    --platform manylinux1_x86_64 --platform manylinux_2_5_x86_64)
    rm -rf .whl .gl && mkdir -p .whl .gl
    # Versions as in requirements.txt (gsplat: the one the CUDA path was checked with); its
    # own needs (jaxtyping, rich, ninja) and numpy, scipy, PyYAML, safetensors are on such
    # machines already.
    python3 -m pip download -q "${pip_args[@]}" -d .whl gsplat==1.5.3 mujoco==4.0.0 \
        mujoco-core==4.0.0 mujoco-studio==4.0.0 websockets glfw==2.11.0 PyOpenGL==3.1.10 \
        rosbags==0.11.9 apsw==3.54.1.0 backports.zstd==1.8.0 lz4==4.4.5 ruamel.yaml==0.19.1
    local apt=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64
               -oDir::State::Lists=/tmp/wmp-apt-lists)
    mkdir -p /tmp/wmp-apt-lists/partial
    apt-get "${apt[@]}" update -qq
    (cd .gl && apt-get "${apt[@]}" download -qq libegl1 libglvnd0 libopengl0 libgl1 libglx0 \
        libgles2)
    du -sh .whl .gl
}

run() {
    local out="$1" tag="${2:-gpu}" limit="${GPU_BENCH_TIMEOUT:-240}" status=0
    mkdir -p "$out"
    for deb in .gl/*.deb; do [ -e "$deb" ] && dpkg -x "$deb" /; done
    ldconfig 2>/dev/null || true
    if compgen -G ".whl/*.whl" >/dev/null; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/wmp-site .whl/*.whl || return 1
        export PYTHONPATH="/tmp/wmp-site${PYTHONPATH:+:$PYTHONPATH}"
    fi
    export MUJOCO_GL=egl PYTHONUNBUFFERED=1 MAX_JOBS="${MAX_JOBS:-16}"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1
    local name extra
    for name in planner world_model scene_memory gsplat_queries; do
        extra=()
        [ "$name" = world_model ] && extra=(--timing-only --no-service)
        echo "== $name"
        # shellcheck disable=SC2086
        timeout "$limit" python3 "benchmarks/$name.py" --device "${GPU_BENCH_DEVICE:-cuda}" \
            ${GPU_BENCH_ARGS:-} "${extra[@]}" \
            --json "$out/${name}_$tag.json" > "$out/${name}_$tag.log" 2>&1 || status=1
        tail -n 40 "$out/${name}_$tag.log"
    done
    return $status
}

case "${1:-}" in
    fetch) fetch ;;
    run) shift; [ $# -ge 1 ] || { echo "usage: $0 run OUT [TAG]" >&2; exit 2; }; run "$@" ;;
    *) sed -n '2,16p' "$0" >&2; exit 2 ;;
esac
