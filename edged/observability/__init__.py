"""What the daemon tells about itself: metrics, telemetry, rates, history, snapshots, environment, health server."""
