"""Test support: a real mosquitto broker, synthetic sources, fault injection passed in by tests."""
