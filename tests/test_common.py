"""scikit-learn's own estimator checks on every public estimator of skot, discovered.

Every class of skot's public modules that is a scikit-learn estimator is checked; the only
hand-written part is a quick setting per class (the checks fit dozens of times) and the
adapter's expected failures, declared once beside it with their reason.
"""

import importlib
import inspect

import pytest
from sklearn.base import BaseEstimator
from sklearn.utils.estimator_checks import parametrize_with_checks

import skot
from skot import OTNetTransport

PUBLIC_MODULES = ["skot", "skot.da", "skot.sampling"]


def _public_estimators():
    found = {}
    for name in PUBLIC_MODULES:
        module = importlib.import_module(name)
        for attr in getattr(module, "__all__", []):
            obj = getattr(module, attr)
            if inspect.isclass(obj) and issubclass(obj, BaseEstimator):
                found[obj.__name__] = obj
    return [found[k] for k in sorted(found)]


ESTIMATORS = _public_estimators()

_QUICK = OTNetTransport(height="vector", tol=0.05, max_iter=100)

#: Settings under which each estimator's checks run quickly; several for the transport, whose
#: height models and smoothing take different code paths.
SETTINGS = {
    "OTNetTransport": [
        {"random_state": 0},
        {"height": "vector", "random_state": 0},
        {"height": "residual", "hidden_layer_sizes": (16,), "random_state": 0},
        {"epsilon": 0.1, "hidden_layer_sizes": (16,), "random_state": 0},
    ],
    "OTNetSampler": [{"n_latent": 2000, "transport": _QUICK, "random_state": 0}],
    "OTNetAdapter": [{"transport": OTNetTransport(height="vector", max_iter=20, random_state=0)}],
}


def _instances():
    for cls in ESTIMATORS:
        for params in SETTINGS.get(cls.__name__, [{}]):
            yield cls(**params)


def _expected_failed_checks(estimator):
    declared = getattr(inspect.getmodule(type(estimator)), "_expected_failed_checks", None)
    return {} if declared is None else declared(estimator)


def test_every_public_estimator_is_discovered():
    names = {cls.__name__ for cls in ESTIMATORS}
    assert {"OTNetTransport", "OTNetSampler", "OTNetAdapter"} <= names
    assert set(SETTINGS) <= names  # no stale entry
    assert skot.OTNetTransport in ESTIMATORS


@parametrize_with_checks(list(_instances()), expected_failed_checks=_expected_failed_checks)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)


@pytest.mark.parametrize("cls", ESTIMATORS, ids=lambda c: c.__name__)
def test_expected_failures_have_reasons(cls):
    for params in SETTINGS.get(cls.__name__, [{}]):
        failures = _expected_failed_checks(cls(**params))
        assert all(isinstance(reason, str) and reason for reason in failures.values())
