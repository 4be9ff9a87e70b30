"""Fixtures for the model tests."""
import pytest


@pytest.fixture
def skip_random_init(monkeypatch):
    """Make the random fills of ``tinygrad_cnn.nn.init`` no-ops for this test.

    Tests that only count parameters, or that overwrite every weight by loading a state_dict, need the
    shapes and not random values; drawing 138M normals for VGG-16 would dominate their run time. Every
    initialiser (layer defaults, kaiming_*, xavier_*) ends in ``uniform_`` or ``normal_``.
    """
    from tinygrad_cnn.nn import init
    for name in ("uniform_", "normal_"):
        monkeypatch.setattr(init, name, lambda tensor, *args, **kwargs: tensor)
