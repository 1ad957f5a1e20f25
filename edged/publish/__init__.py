"""Where events go: the event schema, the disk outbox, the MQTT publisher and the stdout sink."""

from edged.publish.event import RUN_ID, SCHEMA_ID, EventBuilder, build_event, event_schema
from edged.publish.mqtt import MqttPublisher
from edged.publish.outbox import Outbox, OutboxRecord
from edged.publish.stdout import StdoutSink

__all__ = [
    "RUN_ID",
    "SCHEMA_ID",
    "EventBuilder",
    "MqttPublisher",
    "Outbox",
    "OutboxRecord",
    "StdoutSink",
    "build_event",
    "event_schema",
]
