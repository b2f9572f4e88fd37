"""Set-up: `tools/setup_env.sh` options, and the OpenMMLab stack installed on first use (tools/_openmmlab.py)."""
import subprocess
import sys
from pathlib import Path

import pytest

from tools import _openmmlab

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def stack_missing(monkeypatch):
    """The stack reported missing until something 'installs' it; returns that switch."""
    state = {'absent': ['mmcv']}
    monkeypatch.setattr(_openmmlab, 'missing', lambda: list(state['absent']))
    monkeypatch.delenv('WORLD_SIZE', raising=False)
    return state


def test_setup_script_rejects_unknown_options():
    r = subprocess.run(['bash', 'tools/setup_env.sh', '--bogus'], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and "unknown option '--bogus'" in r.stderr and '--all' in r.stderr


def test_outside_the_project_venv_the_command_to_run_is_named(stack_missing, monkeypatch):
    monkeypatch.setattr(sys, 'prefix', '/not/the/project/venv')
    with pytest.raises(SystemExit, match='bash tools/setup_env.sh --all') as e:
        _openmmlab.ensure('tools/demo.py --task detection')
    assert 'tools/demo.py --task detection needs the OpenMMLab stack' in str(e.value)


def test_under_several_processes_nothing_is_installed(stack_missing, monkeypatch):
    monkeypatch.setattr(_openmmlab, 'project_venv', lambda: Path(sys.prefix).resolve())
    monkeypatch.setenv('WORLD_SIZE', '2')
    monkeypatch.setattr(_openmmlab.subprocess, 'run', lambda *a, **k: pytest.fail('must not run the set-up'))
    with pytest.raises(SystemExit, match='before launching several processes'):
        _openmmlab.ensure('tools/train.py x.py')


def test_in_the_project_venv_the_setup_runs_once_and_is_checked(stack_missing, monkeypatch, capsys):
    monkeypatch.setattr(_openmmlab, 'project_venv', lambda: Path(sys.prefix).resolve())
    calls = []

    def fake_setup(cmd, env):
        calls.append(cmd)
        stack_missing['absent'] = []
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(_openmmlab.subprocess, 'run', fake_setup)
    _openmmlab.ensure('tools/train.py x.py')
    assert calls == [['bash', str(ROOT / 'tools' / 'setup_env.sh'), '--all']]
    assert 'Running `bash tools/setup_env.sh --all` once now' in capsys.readouterr().out


def test_a_failed_or_incomplete_setup_stops_with_the_reason(stack_missing, monkeypatch):
    monkeypatch.setattr(_openmmlab, 'project_venv', lambda: Path(sys.prefix).resolve())
    monkeypatch.setattr(_openmmlab.subprocess, 'run', lambda cmd, env: subprocess.CompletedProcess(cmd, 3))
    with pytest.raises(SystemExit, match=r'failed \(exit 3\)'):
        _openmmlab.ensure('x')
    monkeypatch.setattr(_openmmlab.subprocess, 'run', lambda cmd, env: subprocess.CompletedProcess(cmd, 0))
    with pytest.raises(SystemExit, match='still cannot be imported'):
        _openmmlab.ensure('x')
