"""Test a model for any task: `python tools/test.py <config> ...` (see tools/_dispatch.py)."""
from _dispatch import main

if __name__ == '__main__':
    main('test')
