"""mmengine glue shared by :mod:`detection` and :mod:`segmentation` (see :mod:`mmtask.runner`)."""
from .checkpoint import allow_mmengine_checkpoints
from .runner import build_config, iter_datasets, run_test, run_train, test_parser, train_parser, write_metrics

__all__ = ['allow_mmengine_checkpoints', 'build_config', 'iter_datasets', 'run_test', 'run_train', 'test_parser',
           'train_parser', 'write_metrics']
