"""Tests marked ``mm`` need the OpenMMLab stack, which `bash tools/setup_env.sh --all` installs (README command (2)).

When such tests are selected and the stack is missing, the run stops with the command to run: a full run never
passes by skipping them.
"""
import pytest

from tools._openmmlab import SETUP_COMMAND, missing


@pytest.hookimpl(trylast=True)  # after -m / -k deselection: only the tests that will run count
def pytest_collection_modifyitems(config, items):
    needs_mm = [item for item in items if item.get_closest_marker('mm')]
    absent = missing() if needs_mm else []
    if absent:
        pytest.exit(f'{len(needs_mm)} selected tests need the OpenMMLab stack, and {", ".join(absent)} cannot be '
                    f'imported. Install it with `{SETUP_COMMAND}` (README command (2)), or run without them: '
                    f'pytest -m "not slow and not mm"', returncode=pytest.ExitCode.USAGE_ERROR)
