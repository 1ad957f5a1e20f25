"""Health: the local HTTP server (/healthz, /readyz, /metrics, /stats, /history, snapshots, event thumbnails,
the status page); systemd notify/watchdog."""

from edged.observability.health.notify import Notifier, Watchdog, watchdog_interval
from edged.observability.health.server import HealthServer

__all__ = ["HealthServer", "Notifier", "Watchdog", "watchdog_interval"]
