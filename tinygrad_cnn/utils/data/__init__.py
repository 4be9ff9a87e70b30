"""``torch.utils.data`` under its PyTorch name: datasets, samplers and the DataLoader.

The same objects as :mod:`tinygrad_cnn.data` (which also holds CIFAR-10, MNIST and the batch
transforms), so ``import tinygrad_cnn as torch`` then ``torch.utils.data.DataLoader`` works.
"""
from tinygrad_cnn.data.base import ConcatDataset, Dataset, Subset, TensorDataset, random_split
from tinygrad_cnn.data.loader import DataLoader, WorkerInfo, default_collate, default_convert, get_worker_info
from tinygrad_cnn.data.distributed import DistributedSampler
from tinygrad_cnn.data.sampler import (BatchSampler, RandomSampler, Sampler, SequentialSampler,
                                       SubsetRandomSampler)

__all__ = ["Dataset", "TensorDataset", "ConcatDataset", "Subset", "random_split", "DataLoader",
           "default_collate", "default_convert", "get_worker_info", "WorkerInfo", "Sampler",
           "SequentialSampler", "RandomSampler", "SubsetRandomSampler", "BatchSampler", "DistributedSampler"]
