"""The OpenMMLab stack (mmengine, mmcv with compiled ops, mmdet, mmseg), installed the first time it is needed.

The operator, the models and classification need none of it, so ``bash tools/setup_env.sh`` installs only the
core.  The detection and segmentation entry points (tools/train.py, tools/test.py with an mmengine config,
tools/demo.py --task detection|segmentation) call :func:`ensure`: in the project's venv it runs
``bash tools/setup_env.sh --all`` (seconds with a cached mmcv wheel; the first time on a machine it compiles
mmcv and says how long that takes), so the command the user asked for simply runs.  Under another interpreter,
or inside a multi-process launch, it stops with the command to run instead.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETUP_COMMAND = 'bash tools/setup_env.sh --all'
PACKAGES = ('mmengine', 'mmcv', 'mmdet', 'mmseg')


def missing() -> list[str]:
    """What of the stack this interpreter cannot import (mmcv without its compiled ops counts as missing)."""
    absent = [name for name in PACKAGES if importlib.util.find_spec(name) is None]
    if 'mmcv' not in absent:
        mmcv_dir = Path(importlib.util.find_spec('mmcv').origin).parent
        if not any(mmcv_dir.glob('_ext*.so')) and not any(mmcv_dir.glob('_ext*.pyd')):
            absent.append('mmcv ops (mmcv._ext)')
    return absent


def project_venv() -> Path:
    return Path(os.environ.get('ACMIX_VENV', ROOT / '.venv')).resolve()


def ensure(what: str) -> None:
    """Make the stack importable for ``what`` (a command, for messages), installing it if that is safe.

    Raises:
        SystemExit: the stack is missing and cannot be installed from here (another interpreter than the
            project's venv, or one of several launched processes), or the set-up failed.
    """
    absent = missing()
    if not absent:
        return
    venv = project_venv()
    need = f'{what} needs the OpenMMLab stack (mmcv, mmengine, mmdet, mmseg); missing here: {", ".join(absent)}.'
    if Path(sys.prefix).resolve() != venv:
        raise SystemExit(f'{need}\nInstall it once with `{SETUP_COMMAND}` (it sets up {venv}), then run the '
                         f'command with {venv}/bin/python instead of {sys.executable}.')
    if int(os.environ.get('WORLD_SIZE', '1')) > 1:
        raise SystemExit(f'{need}\nInstall it once with `{SETUP_COMMAND}` before launching several processes.')
    print(f'{need} Running `{SETUP_COMMAND}` once now (seconds with a cached mmcv build, otherwise it compiles '
          f'mmcv first and says how long that takes).', flush=True)
    rc = subprocess.run(['bash', str(ROOT / 'tools' / 'setup_env.sh'), '--all'],
                        env={**os.environ, 'ACMIX_VENV': str(venv)}).returncode
    if rc:
        raise SystemExit(f'`{SETUP_COMMAND}` failed (exit {rc}); the messages above name the step. '
                         f'Fix the cause and re-run it.')
    importlib.invalidate_caches()
    absent = missing()
    if absent:
        raise SystemExit(f'`{SETUP_COMMAND}` finished, but {", ".join(absent)} still cannot be imported by '
                         f'{sys.executable}')
