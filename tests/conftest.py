import numpy as np
import pytest
import torch

# Test problems are small: one thread is as fast, immune to oversubscription on a busy
# machine, and makes CPU results independent of the thread count.
torch.set_num_threads(1)

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


@pytest.fixture(params=DEVICES)
def device(request):
    """Every test that takes ``device`` runs on the CPU and, where present, on CUDA."""
    if request.param == "cuda" and not torch.cuda.is_available():
        pytest.skip("CUDA is not available")
    return request.param


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _restore_sklearn_config():
    """Each test starts and ends with the same scikit-learn configuration (skada, for one,
    turns metadata routing on globally when imported)."""
    import sklearn

    with sklearn.config_context():
        yield
