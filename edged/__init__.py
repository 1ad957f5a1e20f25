"""edged: camera frames -> GPU preprocessing -> model chains -> MQTT, for NVIDIA Jetson."""

__version__ = "0.1.0"

# Exit code for configuration errors (sysexits EX_CONFIG); systemd is told not to restart on it.
EX_CONFIG = 78
# Exit code for an input/output error on the command's own streams (sysexits EX_IOERR): stdout on a full
# disk (ENOSPC) or into a closed pipe (EPIPE).
EX_IOERR = 74
