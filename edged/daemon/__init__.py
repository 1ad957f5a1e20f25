"""The daemon: the one place that wires the parts together (lifecycle, signals, reloads, MQTT commands, status)."""
