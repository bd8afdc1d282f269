"""``python -m skot``: the same command line as the ``skot`` console script."""

from ._cli import console

__all__: list[str] = []

if __name__ == "__main__":
    console()
