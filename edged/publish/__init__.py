"""Where events go: the event schema, the disk outbox, the MQTT publisher and the stdout sink."""
