"""The prefix cache: the frozen embeddings and blocks of a classifier run once over each split, their output kept
on disk, and training reads it instead of recomputing it (exact; docs/speed.md).

``build`` opens or builds a split's cache (``prepare``: every split of a run, as one step of it), ``rows`` reads it
as a dataset, ``keys`` names it by everything that decides its contents, ``store`` keeps it complete and locked,
``management`` lists, prunes and bounds it."""

from .build import PrefixCacheOptions, PreparedSplits, frozen_depth, open_prefix_cache, prepare
from .management import list_caches, prune_caches
from .rows import CachedPrefix
from .store import default_cache_dir

__all__ = [
    "CachedPrefix",
    "PrefixCacheOptions",
    "PreparedSplits",
    "default_cache_dir",
    "frozen_depth",
    "list_caches",
    "open_prefix_cache",
    "prepare",
    "prune_caches",
]
