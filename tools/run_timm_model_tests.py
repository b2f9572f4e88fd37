"""Run timm's own ``tests/test_models.py``, from the installed timm release, on the models this repository registers.

The test file is not part of the repository: it is taken from timm's source distribution of the installed version
(``pip download --no-binary :all: --no-deps timm==<version>``), whose ``tests/`` (and the pytest settings of its
``pyproject.toml``) are extracted once into ``$ACMIX_CACHE/timm-tests/timm-<version>/`` (default
``~/.cache/acmix``).  pytest then runs on the extracted file unchanged, with a plugin that

- imports ``models`` (registers our entrypoints with timm) before collection;
- appends our model modules (``resnet``, ``san``, ``pvt``, ``swin`` ...) to the file's ``FEAT_INTER_FILTERS``, timm's
  list of families with ``forward_intermediates``, and our ViT-style models (``NON_STD_MODELS``) to its
  ``NON_STD_FILTERS``, while the file is collected (the lists are read by its ``@pytest.mark.parametrize``
  decorators, so they are extended in the module as it is loaded, not on disk);
- keeps only the tests parametrized with one of our models (``model_name``), deselecting the rest.

Usage::

    python tools/run_timm_model_tests.py                    # every timm model test, on every model of ours
    python tools/run_timm_model_tests.py -- -k fx -x -q     # extra pytest arguments after --
    python tools/run_timm_model_tests.py --models acmix_resnet26 san10
"""
from __future__ import annotations

import argparse
import ast
import os
import subprocess
import sys
import tarfile
import tempfile
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pytest  # noqa: E402
import timm  # noqa: E402
from timm.models import list_models, model_entrypoint, split_model_name_tag  # noqa: E402

import models  # noqa: E402,F401  (registers our entrypoints)

TEST_FILE = 'test_models.py'
# PVT v1 ends in a class token: forward_features gives tokens (B, 1 + h*w, C), not a (B, C, h, w) map, like timm's
# ViT/DeiT, which timm's test file lists in NON_STD_FILTERS (checked by test_model_default_cfgs_non_std instead)
NON_STD_MODELS = ['pvt_v1_*', 'acmix_pvt_*']


def cache_dir() -> Path:
    base = os.environ.get('ACMIX_CACHE') or os.path.join(os.environ.get('XDG_CACHE_HOME', Path.home() / '.cache'),
                                                         'acmix')
    return Path(base) / 'timm-tests'


def fetch_timm_tests(version: str = timm.__version__, cache: Path | None = None) -> Path:
    """Directory holding timm ``version``'s ``tests/`` and ``pyproject.toml``, downloaded and extracted once."""
    dest = (cache or cache_dir()) / f'timm-{version}'
    if (dest / 'tests' / TEST_FILE).is_file():
        return dest
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, '-m', 'pip', 'download', '--no-binary', ':all:', '--no-deps',
                        f'timm=={version}', '-d', tmp], check=True)
        sdists = list(Path(tmp).glob('timm-*.tar.gz'))
        if len(sdists) != 1:
            raise RuntimeError(f'expected one timm sdist in pip download output, found {[p.name for p in sdists]}')
        top = f'timm-{version}/'
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=dest.parent))
        with tarfile.open(sdists[0]) as tar:
            members = [m for m in tar.getmembers()
                       if m.isfile() and (m.name.startswith(top + 'tests/') or m.name == top + 'pyproject.toml')]
            tar.extractall(staging, members=members, filter='data')
        if not (staging / top / 'tests' / TEST_FILE).is_file():
            raise RuntimeError(f'{sdists[0].name} has no tests/{TEST_FILE}')
        os.replace(staging / top, dest)  # atomic: a half extraction is never mistaken for a cached one
        staging.rmdir()
    return dest


def our_models() -> list[str]:
    """Every timm model name whose entrypoint lives in this repository's ``models`` package."""
    return [n for n in list_models() if model_entrypoint(n).__module__.startswith(f'{models.__name__}.')]


def model_modules(names: list[str]) -> list[str]:
    """timm's module keys (last component of the entrypoint's module, as timm's registry files them)."""
    return sorted({model_entrypoint(n).__module__.split('.')[-1] for n in names})


class TimmModelTestsPlugin:
    """pytest plugin: our modules / models in the collected file's filter lists, only our models' tests kept."""

    def __init__(self, test_file: Path, model_names: list[str]) -> None:
        self.test_file = test_file.resolve()
        self.model_names = set(model_names)
        self.extend = dict(FEAT_INTER_FILTERS=model_modules(model_names), NON_STD_FILTERS=NON_STD_MODELS)

    def pytest_pycollect_makemodule(self, module_path: Path, parent):
        if Path(module_path).resolve() == self.test_file:
            return _ExtendedFiltersModule.from_parent(parent, path=Path(module_path), extend=self.extend)
        return None

    def pytest_collection_modifyitems(self, config, items) -> None:
        keep, drop = [], []
        for item in items:
            params = getattr(getattr(item, 'callspec', None), 'params', {})
            name = params.get('model_name')
            # some tests list pretrained tags too ('acmix_resnet26.in1k')
            (keep if isinstance(name, str) and split_model_name_tag(name)[0] in self.model_names else drop).append(item)
        if drop:
            config.hook.pytest_deselected(items=drop)
        items[:] = keep


class _ExtendedFiltersModule(pytest.Module):
    """timm's test module, executed with ``NAME.extend(values)`` right after each ``NAME = [...]`` of ``extend``."""

    def __init__(self, *args, extend: dict[str, list[str]], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.extend = extend

    def _getobj(self):
        tree = ast.parse(self.path.read_text(), filename=str(self.path))
        for name, values in self.extend.items():
            at = [i for i, node in enumerate(tree.body) if isinstance(node, ast.Assign)
                  and any(isinstance(t, ast.Name) and t.id == name for t in node.targets)]
            if len(at) != 1:
                raise RuntimeError(f'{self.path}: expected one {name} assignment, found {len(at)}')
            tree.body.insert(at[0] + 1, ast.parse(f'{name}.extend({values!r})').body[0])
        ast.fix_missing_locations(tree)
        name = f'{self.path.parent.name}.{self.path.stem}'
        module = types.ModuleType(name)
        module.__file__ = str(self.path)
        sys.modules[name] = module
        exec(compile(tree, str(self.path), 'exec'), module.__dict__)
        return module


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--models', nargs='+', help='model names (default: every model registered by models/)')
    parser.add_argument('pytest_args', nargs='*', help='extra pytest arguments (after --)')
    args = parser.parse_args(argv)
    names = args.models or our_models()
    unknown = [n for n in names if n not in list_models()]
    if unknown:
        raise SystemExit(f'unknown model names: {unknown}')
    root = fetch_timm_tests()
    test_file = root / 'tests' / TEST_FILE
    print(f'timm {timm.__version__} tests from {root}; models: {" ".join(names)}', flush=True)
    pytest_args = [str(test_file), '-c', str(root / 'pyproject.toml'), '--rootdir', str(root),
                   '-p', 'no:cacheprovider', '-W', 'ignore::pytest.PytestUnknownMarkWarning', *args.pytest_args]
    return int(pytest.main(pytest_args, plugins=[TimmModelTestsPlugin(test_file, names)]))


if __name__ == '__main__':
    sys.exit(main())
