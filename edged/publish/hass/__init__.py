"""Home Assistant MQTT discovery: discovery.py sends the configs; entities.py and analytics.py are the
entity tables (data only)."""
