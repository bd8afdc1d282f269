"""skot: reusable neural semi-discrete optimal transport (OT-Net), scikit-learn native."""

from ._transport import OTNetTransport
from .sampling import OTNetSampler

__all__ = ["OTNetSampler", "OTNetTransport", "__version__"]
__version__ = "0.1.0.dev0"
