"""``python -m benchmarks._worker module:function JSON``: one isolated benchmark case."""

import sys

from benchmarks._util import _worker_main

__all__: list[str] = []

if __name__ == "__main__":
    _worker_main(sys.argv[1:])
