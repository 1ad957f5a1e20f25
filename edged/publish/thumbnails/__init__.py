"""Event thumbnails: thumbnailer.py picks and encodes the best crop per event or track on its own thread;
store.py keeps the JPEGs on disk, capped in bytes."""
