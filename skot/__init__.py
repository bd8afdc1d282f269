"""skot: reusable neural semi-discrete optimal transport (OT-Net), scikit-learn native."""

from . import exceptions
from ._transport import OTNetTransport
from .exceptions import AtomicSourceWarning, DataRangeError, DivergenceError
from .sampling import OTNetSampler

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
