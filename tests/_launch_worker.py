"""torchrun target of tests/test_launch.py: ``tools/train.py``'s run, then this rank's final weights to a file.

    torchrun --standalone --nproc_per_node 2 tests/_launch_worker.py OUT_DIR <train.py arguments>

Writes ``OUT_DIR/rank<R>.pt`` (the model's state dict as this process ends training), so the test can check that
every process holds the same weights.  Only the test's own process is instrumented: it keeps a reference to the
model (classification) or the mmengine Runner (detection, segmentation) that the task builds.
"""
import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools._dispatch import run  # noqa: E402


def main() -> int:
    out, argv = Path(sys.argv[1]), sys.argv[2:]
    built = []
    if argv[0].endswith('.yaml'):
        import classification.cli as task
        real = task.build_model
        task.build_model = lambda *a, **k: built.append(real(*a, **k)) or built[-1]
        state = lambda: built[0].state_dict()  # noqa: E731
    else:
        import mmtask.runner as task
        real = task._runner
        task._runner = lambda cfg: built.append(real(cfg)) or built[-1]
        state = lambda: built[0].model.module.state_dict()  # noqa: E731
    code = run('train', argv)
    torch.save({k: v.detach().cpu() for k, v in state().items()}, out / f'rank{os.environ["RANK"]}.pt')
    return code


if __name__ == '__main__':
    raise SystemExit(main())
