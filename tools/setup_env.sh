#!/usr/bin/env bash
# Idempotent set-up in ./.venv (git-ignored).
#
#   bash tools/setup_env.sh          # core: torch, timm, ... -- the operator, the models, classification
#   bash tools/setup_env.sh --all    # core + the OpenMMLab stack for detection / segmentation
#
# Core steps: venv -> requirements/core.txt.  --all adds: build tools -> mmcv 2.1.0 with compiled ops ->
# requirements/openmmlab.txt (mmengine, mmdet, mmseg).  PyPI ships mmcv only as a source package, and its
# setup.py asks for -std=c++17 while torch>=2.10 headers need C++20, so we build it ourselves with that one
# flag patched.  CPU ops are built unless a CUDA toolkit (nvcc) and a GPU are present.  The built wheel is
# cached outside the repository in $ACMIX_CACHE (default ~/.cache/acmix), so only the first set-up on a
# machine compiles.  tools/train.py, tools/test.py and tools/demo.py run `--all` themselves the first time a
# detection or segmentation command needs it.  A re-run with everything in place checks imports and exits in
# seconds.
#
# Environment knobs: ACMIX_CACHE (wheel cache), ACMIX_VENV (venv path, default ./.venv),
# MAX_JOBS (parallel compile jobs, default: number of cores), PYTHON (interpreter for the venv),
# ACMIX_MMCV_CUDA=1|0 (force CUDA / CPU ops).
set -euo pipefail

usage() { sed -n '2,6p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
WITH_MM=0
for arg in "$@"; do
    case "$arg" in
        --all) WITH_MM=1 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "setup_env.sh: unknown option '$arg'" >&2; usage >&2; exit 2 ;;
    esac
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${ACMIX_VENV:-$ROOT/.venv}"
CACHE="${ACMIX_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/acmix}"
PYTHON="${PYTHON:-python3}"
MMCV_VERSION=2.1.0
# CPU time of the mmcv compile, measured on a 2-core machine (README "Set-up"): 35 CPU-minutes.
MMCV_BUILD_CPU_MIN=35
STEP="start"
T0=$SECONDS

log() { printf '[setup %4ds] %s\n' "$((SECONDS - T0))" "$*"; }
ARGS="${*:+ $*}"
fail() {
    local rc=$?
    printf '\n[setup] FAILED at step "%s" (exit %d). Fix the cause above and re-run: bash tools/setup_env.sh%s\n' \
        "$STEP" "$rc" "$ARGS" >&2
    exit "$rc"
}
trap fail ERR

# Stamps record what was installed; when the requirement files and this script are unchanged and the
# imports work, that part is skipped.
CORE_STAMP="$VENV/.acmix-setup-core"
MM_STAMP="$VENV/.acmix-setup-openmmlab"
core_hash="$(cat "$ROOT"/requirements/core.txt "$ROOT/tools/setup_env.sh" | sha256sum | cut -c1-16)"
mm_hash="$(cat "$ROOT"/requirements/*.txt "$ROOT/tools/setup_env.sh" | sha256sum | cut -c1-16)"
stamp_ok() { [[ -f "$1" && "$(cat "$1")" == "$2" ]]; }

STEP="check existing environment"
core_ok=0
stamp_ok "$CORE_STAMP" "$core_hash" && "$VENV/bin/python" -c "import torch, torchvision, timm" 2>/dev/null && core_ok=1
if [[ $core_ok == 1 && $WITH_MM == 0 ]]; then
    log "core environment in $VENV is up to date (detection/segmentation: bash tools/setup_env.sh --all)"
    exit 0
fi
if [[ $core_ok == 1 ]] && stamp_ok "$MM_STAMP" "$mm_hash" \
    && "$VENV/bin/python" -c "import mmcv, mmcv.ops, mmengine, mmdet, mmseg" 2>/dev/null; then
    log "environment in $VENV (core + OpenMMLab) is up to date"
    exit 0
fi

STEP="create virtual environment"
if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating $VENV with $($PYTHON --version)"
    "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check)
# pip without the machine's noise: this host's pip configuration names local index folders that do not exist,
# and pip warns about each of them for every package.  --no-compile: Python compiles the few modules that are
# imported on first import, instead of pip byte-compiling all ~9,000 files up front (~30 s of the set-up).
pip_install() {
    "${PIP[@]}" install --no-compile "$@" 2> >(grep -v "^WARNING: Location '.*' is ignored" >&2)
}

if [[ $core_ok == 0 ]]; then
    STEP="install core packages (requirements/core.txt)"
    log "$STEP: torch, torchvision, timm, ... (torch is ~5 GB, about a minute from a local wheel)"
    pip_install -q -r "$ROOT/requirements/core.txt"
    STEP="verify core imports"
    "$PY" -c "import torch, torchvision, timm; print('torch', torch.__version__, '| torchvision', torchvision.__version__, '| timm', timm.__version__)"
    echo "$core_hash" >"$CORE_STAMP"
    log "core done"
fi
if [[ $WITH_MM == 0 ]]; then
    log "detection/segmentation need the OpenMMLab stack: bash tools/setup_env.sh --all (tools/train.py, test.py and demo.py run it when needed)"
    exit 0
fi

# After core: torch pulls in a new setuptools, and mmcv's build needs pkg_resources (<70).
STEP="install build tools (requirements/build.txt)"
log "$STEP"
pip_install -q -r "$ROOT/requirements/build.txt" 2>&1 | grep -v "requires setuptools" || true
"$PY" -c "import pkg_resources" 2>/dev/null

STEP="probe torch and CUDA toolkit"
TORCH_TAG="$("$PY" -c 'import torch; print(torch.__version__.split("+")[0])')"
NVCC="$(command -v nvcc || true)"
[[ -z "$NVCC" && -n "${CUDA_HOME:-}" && -x "$CUDA_HOME/bin/nvcc" ]] && NVCC="$CUDA_HOME/bin/nvcc"
# CUDA ops need a toolkit *and* a GPU: a toolkit alone (as on CPU build machines) would cost
# hours of nvcc on a few cores for kernels nothing can run.  ACMIX_MMCV_CUDA=1/0 overrides.
want_cuda="${ACMIX_MMCV_CUDA:-auto}"
if [[ "$want_cuda" == auto ]]; then
    want_cuda=0
    [[ -n "$NVCC" ]] && "$PY" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' 2>/dev/null && want_cuda=1
fi
if [[ "$want_cuda" == 1 ]]; then
    [[ -n "$NVCC" ]] || { echo "ACMIX_MMCV_CUDA=1 but no nvcc found (set CUDA_HOME)" >&2; false; }
    DEVICE_TAG="cu$("$NVCC" --version | sed -n 's/.*release \([0-9]*\)\.\([0-9]*\).*/\1\2/p')"
    FORCE_CUDA=1
else
    DEVICE_TAG=cpu
    FORCE_CUDA=0
fi
WHEEL_DIR="$CACHE/wheels/mmcv-$MMCV_VERSION-torch$TORCH_TAG-$DEVICE_TAG-py$("$PY" -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')"
log "torch $TORCH_TAG, mmcv ops for: $DEVICE_TAG, wheel cache: $WHEEL_DIR"

STEP="build mmcv $MMCV_VERSION ops ($DEVICE_TAG)"
if "$PY" -c "import mmcv, mmcv.ops, sys; sys.exit(mmcv.__version__ != '$MMCV_VERSION')" 2>/dev/null; then
    log "mmcv $MMCV_VERSION with ops already installed"
else
    if ! compgen -G "$WHEEL_DIR/mmcv-$MMCV_VERSION-*.whl" >/dev/null; then
        BUILD="$(mktemp -d)"
        log "downloading mmcv $MMCV_VERSION source"
        # --no-build-isolation: metadata generation imports torch, which must come from this venv.
        "${PIP[@]}" download -q --no-deps --no-binary :all: --no-build-isolation \
            "mmcv==$MMCV_VERSION" -d "$BUILD"
        tar -xzf "$BUILD/mmcv-$MMCV_VERSION.tar.gz" -C "$BUILD"
        # torch>=2.10 headers: '#error C++20 or later compatible compiler is required'.
        sed -i 's/-std=c++1[47]/-std=c++20/g' "$BUILD/mmcv-$MMCV_VERSION/setup.py"
        grep -q -- '-std=c++20' "$BUILD/mmcv-$MMCV_VERSION/setup.py"
        JOBS="${MAX_JOBS:-$(nproc)}"
        log "compiling mmcv's 77 op files once, about $(( (MMCV_BUILD_CPU_MIN + JOBS - 1) / JOBS )) min with $JOBS jobs on idle cores ($MMCV_BUILD_CPU_MIN CPU-minutes; progress below); later set-ups reuse the cached wheel"
        mkdir -p "$WHEEL_DIR"
        (cd "$BUILD/mmcv-$MMCV_VERSION" && MMCV_WITH_OPS=1 FORCE_CUDA=$FORCE_CUDA MAX_JOBS="$JOBS" \
            "${PIP[@]}" wheel --no-build-isolation --no-deps -v . -w "$BUILD/dist" 2>&1 \
            | sed -u -n -E -e 's#^ *(\[[0-9]+/[0-9]+\]) .* ([^ ]+\.(cpp|cu)) .*#    \1 \2#p' -e '/[Ee]rror/p' || true)
        compgen -G "$BUILD/dist/mmcv-$MMCV_VERSION-*.whl" >/dev/null \
            || { echo "no mmcv wheel was produced; see the compiler errors above" >&2; false; }
        # Publish atomically, so an interrupted build never leaves a broken wheel in the cache.
        for w in "$BUILD"/dist/mmcv-"$MMCV_VERSION"-*.whl; do
            cp "$w" "$WHEEL_DIR/.tmp-$(basename "$w")" && mv "$WHEEL_DIR/.tmp-$(basename "$w")" "$WHEEL_DIR/$(basename "$w")"
        done
        rm -rf "$BUILD"
    else
        log "using cached mmcv wheel"
    fi
    pip_install -q --no-deps --force-reinstall "$WHEEL_DIR"/mmcv-"$MMCV_VERSION"-*.whl
    # mmcv's own runtime dependencies (addict, yapf, opencv, ...).
    pip_install -q "mmcv==$MMCV_VERSION" --find-links "$WHEEL_DIR"
fi

STEP="install OpenMMLab packages (requirements/openmmlab.txt)"
log "$STEP"
pip_install -q -r "$ROOT/requirements/openmmlab.txt" --find-links "$WHEEL_DIR"

STEP="verify imports"
"$PY" -c "import torch, torchvision, timm, mmcv, mmcv.ops, mmengine, mmdet, mmseg; print('torch', torch.__version__, '| timm', timm.__version__, '| mmcv', mmcv.__version__, '| mmengine', mmengine.__version__, '| mmdet', mmdet.__version__, '| mmseg', mmseg.__version__)"
echo "$mm_hash" >"$MM_STAMP"
log "done: activate with 'source $VENV/bin/activate'"
