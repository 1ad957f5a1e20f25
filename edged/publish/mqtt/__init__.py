"""MQTT: the publisher (publisher.py: `MqttPublisher`, at-least-once through the outbox), the paho client as
edged sets it up (client.py), which PUBACK acknowledges what (mids.py), guards on paho's threads (guards.py)."""
