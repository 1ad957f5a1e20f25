"""The crash-safe disk outbox: events wait here until the broker acknowledges them (store.py: `Outbox`;
records.py: the on-disk format; segments.py + segment_files.py: the segments in memory and on disk; loss.py:
files removed under it; drops.py: what it drops and why; diskio.py: its file operations)."""
