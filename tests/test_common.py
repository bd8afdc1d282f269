"""scikit-learn's own estimator checks, with no expected failures."""

from sklearn.utils.estimator_checks import parametrize_with_checks

from skot import OTNetSampler, OTNetTransport


@parametrize_with_checks(
    [
        OTNetTransport(random_state=0),
        OTNetTransport(height="vector", random_state=0),
        OTNetTransport(height="residual", hidden_layer_sizes=(16,), random_state=0),
        OTNetTransport(epsilon=0.1, hidden_layer_sizes=(16,), random_state=0),
        OTNetSampler(
            n_latent=2000,
            transport=OTNetTransport(height="vector", tol=0.05, max_iter=100),
            random_state=0,
        ),
    ]
)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
