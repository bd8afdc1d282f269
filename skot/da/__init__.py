"""Domain adaptation with OT-Net: sklearn pipelines, label transfer and model selection.

A classifier trained on a labelled *source* domain often fails on an unlabelled *target*
domain whose features are shifted. Optimal transport fixes the shift by moving the source
samples onto the target distribution before the classifier learns from them. This module holds
the glue that makes that one ordinary scikit-learn object:

- :class:`OTNetAdapter`: the transformer of ``scaler -> adapter -> classifier`` pipelines. Its
  ``fit_transform`` returns the *transported* source (what the classifier is trained on) and its
  ``transform`` lets (target) data through unchanged at predict time. Target data arrive by
  metadata routing (``X_target``) or stacked with the source in skada's ``sample_domain``
  convention.
- :func:`label_proportions` and :func:`transfer_labels`: source labels carried to the target
  points through the map (hard cells, or soft memberships when ``epsilon > 0``).
- :class:`ReverseValidationScorer`: a score without target labels that ``GridSearchCV`` can
  maximise to choose OT-Net hyperparameters.

skada is optional: nothing here imports it.
"""

from ._adapter import OTNetAdapter
from ._labels import label_proportions, transfer_labels
from ._scoring import ReverseValidationScorer

__all__ = [
    "OTNetAdapter",
    "ReverseValidationScorer",
    "label_proportions",
    "transfer_labels",
]
