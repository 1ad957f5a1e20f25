"""Inference backends behind one Engine protocol; `create_engine` picks one by name or `auto`."""
