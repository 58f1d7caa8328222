"""The on-disk tick log: append-only segments with a dense checksummed index.

See ``docs/storage.md`` for the file format and :class:`SegmentStore` for the API.
"""

from tickcast.storage.store import CLEAN_NAME, EPOCH_NAME, LOCK_NAME, FsyncPolicy, SegmentStore

__all__ = ["CLEAN_NAME", "EPOCH_NAME", "LOCK_NAME", "FsyncPolicy", "SegmentStore"]
