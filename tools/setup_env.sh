#!/usr/bin/env bash
# Idempotent set-up of the whole stack in ./.venv (git-ignored).
#
#   bash tools/setup_env.sh            # create or update .venv
#
# Steps: venv -> build tools -> core (torch, timm, ...) -> mmcv 2.1.0 with compiled ops
# -> OpenMMLab (mmengine, mmdet, mmseg).  PyPI ships mmcv only as a source package, and its
# setup.py asks for -std=c++17 while torch>=2.10 headers need C++20, so we build it ourselves
# with that one flag patched.  CPU ops are built when no CUDA toolkit (nvcc) is found, CUDA ops
# otherwise.  The built wheel is cached outside the repository in $ACMIX_CACHE
# (default ~/.cache/acmix), so the next set-up on the same machine skips the ~15 min build.
# A second run with everything in place only checks imports and exits in seconds.
#
# Environment knobs: ACMIX_CACHE (wheel cache), ACMIX_VENV (venv path, default ./.venv),
# MAX_JOBS (parallel compile jobs, default: number of cores), PYTHON (interpreter for the venv).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${ACMIX_VENV:-$ROOT/.venv}"
CACHE="${ACMIX_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/acmix}"
PYTHON="${PYTHON:-python3}"
MMCV_VERSION=2.1.0
STEP="start"
T0=$SECONDS

log() { printf '[setup %4ds] %s\n' "$((SECONDS - T0))" "$*"; }
fail() {
    local rc=$?
    printf '\n[setup] FAILED at step "%s" (exit %d). Fix the cause above and re-run: bash tools/setup_env.sh\n' "$STEP" "$rc" >&2
    exit "$rc"
}
trap fail ERR

# The stamp records what was installed; when the requirement files and this script are
# unchanged and the imports work, nothing is done.
STAMP="$VENV/.acmix-setup-stamp"
want_stamp="$(cat "$ROOT"/requirements.txt "$ROOT"/requirements/*.txt "$ROOT/tools/setup_env.sh" | sha256sum | cut -c1-16)"

STEP="check existing environment"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want_stamp" ]] \
    && "$VENV/bin/python" -c "import torch, timm, mmcv, mmcv.ops, mmdet, mmseg" 2>/dev/null; then
    log "environment in $VENV is up to date"
    exit 0
fi

STEP="create virtual environment"
if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating $VENV with $($PYTHON --version)"
    "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check)

STEP="install core packages (requirements/core.txt)"
log "$STEP: torch, torchvision, timm, ... (torch is ~5 GB, about a minute from a local wheel)"
"${PIP[@]}" install -q -r "$ROOT/requirements/core.txt"

# After core: torch pulls in a new setuptools, and mmcv's build needs pkg_resources (<70).
STEP="install build tools (requirements/build.txt)"
log "$STEP"
"${PIP[@]}" install -q -r "$ROOT/requirements/build.txt" 2>&1 | grep -v "requires setuptools" || true
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
        log "compiling mmcv ops with MAX_JOBS=${MAX_JOBS:-$(nproc)} (about 15 min on 2 cores; progress below)"
        mkdir -p "$WHEEL_DIR"
        (cd "$BUILD/mmcv-$MMCV_VERSION" && MMCV_WITH_OPS=1 FORCE_CUDA=$FORCE_CUDA MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
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
    "${PIP[@]}" install -q --no-deps --force-reinstall "$WHEEL_DIR"/mmcv-"$MMCV_VERSION"-*.whl
    # mmcv's own runtime dependencies (addict, yapf, opencv, ...).
    "${PIP[@]}" install -q "mmcv==$MMCV_VERSION" --find-links "$WHEEL_DIR"
fi

STEP="install OpenMMLab packages (requirements/openmmlab.txt)"
log "$STEP"
"${PIP[@]}" install -q -r "$ROOT/requirements/openmmlab.txt" --find-links "$WHEEL_DIR"

STEP="verify imports"
"$PY" -c "import torch, torchvision, timm, mmcv, mmcv.ops, mmdet, mmseg; print('torch', torch.__version__, '| timm', timm.__version__, '| mmcv', mmcv.__version__, '| mmdet', mmdet.__version__, '| mmseg', mmseg.__version__)"
echo "$want_stamp" >"$STAMP"
log "done: activate with 'source $VENV/bin/activate'"
