"""PyTorch's ``torch.backends.mps`` (Apple Metal): not a backend here, so never available."""

__all__ = ["is_available", "is_built"]


def is_available() -> bool:
    return False


def is_built() -> bool:
    return False
