"""mmengine glue shared by :mod:`detection` and :mod:`segmentation` (see :mod:`mmtask.runner`)."""
from .checkpoint import mmengine_checkpoints
from .runner import (USER_ERRORS, DatasetError, UsageError, build_config, iter_datasets, jsonable, test, train,
                     write_metrics)

__all__ = ['mmengine_checkpoints', 'USER_ERRORS', 'DatasetError', 'UsageError', 'build_config', 'iter_datasets',
           'jsonable', 'test', 'train', 'write_metrics']
