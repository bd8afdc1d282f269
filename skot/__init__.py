"""skot: reusable neural semi-discrete optimal transport (OT-Net), scikit-learn native."""

from __future__ import annotations

import importlib

__all__ = [
    "AtomicSourceWarning",
    "DataRangeError",
    "DivergenceError",
    "OTNetSampler",
    "OTNetTransport",
    "__version__",
    "exceptions",
]
__version__ = "0.1.0.dev0"

# The public names are imported on first use (PEP 562), so that ``import skot`` and the
# command line's ``--help``, ``--version`` and error paths do not pay for torch and
# scikit-learn; ``from skot import OTNetTransport`` and ``skot.da`` work as before.
_LAZY = {
    "AtomicSourceWarning": ".exceptions",
    "DataRangeError": ".exceptions",
    "DivergenceError": ".exceptions",
    "OTNetSampler": ".sampling",
    "OTNetTransport": "._transport",
}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    if name == "exceptions":
        return importlib.import_module(".exceptions", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
