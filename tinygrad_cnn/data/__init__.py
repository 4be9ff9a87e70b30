"""Datasets (CIFAR-10, MNIST), verified downloads, batch transforms and the DataLoader."""
from .base import ArrayDataset, ConcatDataset, Dataset, Subset, TensorDataset, random_split
from .cifar import CIFAR10, CIFAR10_CLASSES, read_cifar_batch
from .download import (DatasetIntegrityError, DatasetNotFoundError, default_cache_dir, download_url,
                       extract_archive, file_md5, find_shared_data)
from .distributed import DistributedSampler
from .loader import DataLoader, WorkerInfo, default_collate, default_convert, get_worker_info
from .sampler import BatchSampler, RandomSampler, Sampler, SequentialSampler, SubsetRandomSampler
from .mnist import MNIST, read_idx
from . import transforms

__all__ = [
    "Dataset", "TensorDataset", "ConcatDataset", "ArrayDataset", "Subset", "random_split", "default_collate",
    "default_convert",
    "get_worker_info", "WorkerInfo", "Sampler", "SequentialSampler", "RandomSampler", "SubsetRandomSampler",
    "BatchSampler", "DistributedSampler", "CIFAR10", "CIFAR10_CLASSES", "read_cifar_batch", "MNIST",
    "read_idx", "DataLoader", "transforms", "DatasetIntegrityError", "DatasetNotFoundError",
    "default_cache_dir", "download_url", "extract_archive", "file_md5", "find_shared_data",
]
