"""Datasets (CIFAR-10, MNIST), verified downloads, batch transforms and the DataLoader."""
from .base import ArrayDataset, Subset, random_split
from .cifar import CIFAR10, CIFAR10_CLASSES, read_cifar_batch
from .download import (DatasetIntegrityError, DatasetNotFoundError, default_cache_dir, download_url,
                       extract_archive, file_md5, find_shared_data)
from .distributed import DistributedSampler
from .loader import DataLoader
from .mnist import MNIST, read_idx
from . import transforms

__all__ = [
    "ArrayDataset", "Subset", "random_split", "CIFAR10", "CIFAR10_CLASSES", "read_cifar_batch", "MNIST",
    "read_idx", "DataLoader", "DistributedSampler", "transforms", "DatasetIntegrityError", "DatasetNotFoundError",
    "default_cache_dir", "download_url", "extract_archive", "file_md5", "find_shared_data",
]
