"""Health: the local HTTP server (/healthz, /readyz, /metrics, /stats, /history, snapshots, event thumbnails,
the status page); systemd notify/watchdog."""
