"""Moved to :mod:`tropic.apps.datasets`; this old path re-exports its public names."""

from tropic.apps.datasets import (
    DATASETS,
    DISKORECT_SIZE,
    OPERATIONS,
    SHAPES,
    diskorect_task,
    load,
    read_cifar10,
    read_idx,
    split_sizes,
    structuring_element,
)

__all__ = [
    "DATASETS",
    "DISKORECT_SIZE",
    "OPERATIONS",
    "SHAPES",
    "diskorect_task",
    "load",
    "read_cifar10",
    "read_idx",
    "split_sizes",
    "structuring_element",
]
