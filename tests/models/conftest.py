"""Fixtures for the model tests."""
import pytest


def _zero_fill(tensor, *args, **kwargs):
    tensor.array[...] = 0
    return tensor


def _patch_random_fills(monkeypatch, fill):
    from tinygrad_cnn.nn import init
    for name in ("uniform_", "normal_"):
        monkeypatch.setattr(init, name, fill)


@pytest.fixture
def skip_random_init(monkeypatch):
    """Make the random fills of ``tinygrad_cnn.nn.init`` no-ops for this test.

    Tests that only count parameters, or that overwrite every weight by loading a state_dict, need the
    shapes and not random values; drawing 138M normals for VGG-16 would dominate their run time. Every
    initialiser (layer defaults, kaiming_*, xavier_*) ends in ``uniform_`` or ``normal_``. The weights are
    left uninitialised: do not compute with them.
    """
    _patch_random_fills(monkeypatch, lambda tensor, *args, **kwargs: tensor)


@pytest.fixture
def zero_init(monkeypatch):
    """Like ``skip_random_init``, but every randomly initialised weight is 0: cheap, and safe to run a
    forward pass with when only shapes and operation counts matter."""
    _patch_random_fills(monkeypatch, _zero_fill)
