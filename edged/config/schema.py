"""The configuration schema: one YAML file on the device, validated by these pydantic models.

This module holds the top level (`Config`) and the daemon-wide sections (device, MQTT, health,
thumbnails, logging); cameras.py has the cameras and their chains, inference.py the models.

Every model forbids unknown keys (a typo is an error, not a silently ignored setting) and every
field has a description, which `edged schema` and docs/configuration.md show to users.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator

from edged.config.base import NAME_RE, EdgedModel
from edged.config.cameras import CameraConfig, StageConfig
from edged.config.inference import ModelConfig


class DeviceConfig(EdgedModel):
    name: str = Field(
        "edged", pattern=NAME_RE, description="Device name; part of the MQTT topic prefix and every event."
    )


class TlsConfig(EdgedModel):
    enabled: bool = Field(False, description="Connect to the broker over TLS.")
    ca_file: Path | None = Field(
        None, description="CA certificate(s) that signed the broker's certificate (PEM). None: system CAs."
    )
    cert_file: Path | None = Field(
        None, description="Client certificate (PEM), for brokers that require one."
    )
    key_file: Path | None = Field(None, description="Private key of the client certificate (PEM).")
    insecure: bool = Field(False, description="Skip the broker hostname check (testing only).")


class OutboxConfig(EdgedModel):
    dir: Path = Field(
        Path("/var/lib/edged/outbox"),
        description="Directory of the disk outbox (events wait here until the broker acknowledges them).",
    )
    max_bytes: int = Field(
        256 * 1024 * 1024,
        ge=1024,
        description="Cap on the outbox size; the oldest events are dropped (and counted) beyond it.",
    )
    max_age_s: float = Field(
        7 * 24 * 3600,
        gt=0,
        description="Events older than this are dropped (and counted) instead of replayed.",
    )
    fsync: Literal["always", "interval", "never"] = Field(
        "interval",
        description="When appended events are fsync'ed: after each event, at most every fsync_interval_s, or never (OS decides).",
    )
    fsync_interval_s: float = Field(
        1.0,
        gt=0,
        description="Longest time between fsyncs with fsync: interval (bounds the loss on power failure).",
    )
    replay_rate: float = Field(
        200.0,
        gt=0,
        description="Most backlog events replayed per second after a reconnect (live events go on alongside).",
    )
    max_memory_bytes: int = Field(
        8 * 1024 * 1024,
        ge=0,
        description="While the disk refuses writes (full, I/O error), events are held in memory up to this many bytes and written when it takes writes again; beyond it the oldest are dropped (reason disk_full).",
    )


class HassConfig(EdgedModel):
    enabled: bool = Field(
        False,
        description="Announce cameras to Home Assistant by MQTT discovery (retained configs) and publish their state.",
    )
    discovery_prefix: str = Field(
        "homeassistant",
        pattern=r"^[A-Za-z0-9_/-]{1,128}$",
        description="Home Assistant's MQTT discovery prefix (its `discovery_prefix` setting).",
    )
    state_interval_s: float = Field(
        10.0,
        gt=0,
        description="Period of the retained <prefix>/<camera>/state message (fps, online); events also update it.",
    )
    configuration_url: str | None = Field(
        None,
        pattern=r"^https?://",
        description="Link on the HA device page; default: the status page when the health server listens "
        "on a non-loopback address (http://<host>:<health.port>/), else none.",
    )


class MqttConfig(EdgedModel):
    enabled: bool = Field(
        True, description="Publish events over MQTT. When false, events only go to the stdout sink, if any."
    )
    host: str = Field("127.0.0.1", description="Broker host name or address.")
    port: int = Field(1883, ge=1, le=65535, description="Broker port (8883 is usual for TLS).")
    prefix: str | None = Field(None, description="Topic prefix; default edged/<device.name>.")
    client_id: str | None = Field(None, description="MQTT client id; default edged-<device.name>.")
    username: str | None = Field(None, description="User name for the broker.")
    password: SecretStr | None = Field(
        None, description="Password; prefer ${cred:NAME} (systemd LoadCredential) over plain text."
    )
    qos: Literal[0, 1] = Field(
        1, description="QoS of detection messages; 1 gives at-least-once delivery through the outbox."
    )
    keepalive_s: int = Field(30, ge=5, le=3600, description="MQTT keepalive interval.")
    protocol: Literal["5", "3.1.1"] = Field(
        "5",
        description="MQTT protocol version. 5: retained per-camera states carry a message expiry "
        "(state_expiry_s), so none outlives a crashed edged; 3.1.1 for brokers without MQTT 5: they "
        "stay until overwritten, and only <prefix>/status (the last will) says edged is gone (docs/mqtt.md).",
    )
    state_expiry_s: int = Field(
        30,
        ge=0,
        le=86400,
        description="With protocol 5: the broker deletes the retained <prefix>/<camera>/state and "
        "<prefix>/<camera>/enabled this long after edged last refreshed them (a crash, a SIGKILL, a power "
        "cut); edged refreshes them every third of it. 0: no expiry.",
    )
    reconnect_min_s: float = Field(
        1.0, gt=0, description="First reconnect delay; doubles up to reconnect_max_s."
    )
    reconnect_max_s: float = Field(30.0, gt=0, description="Longest reconnect delay.")
    tls: TlsConfig = Field(default_factory=TlsConfig, description="TLS settings for the broker connection.")
    outbox: OutboxConfig = Field(default_factory=OutboxConfig, description="Store-and-forward disk outbox.")
    commands: bool = Field(
        False, description="Accept commands on <prefix>/<camera>/set/... (enable, snapshot)."
    )
    stats_interval_s: float = Field(
        60.0, ge=0, description="Period of the <prefix>/stats message; 0 disables it."
    )
    hass: HassConfig = Field(
        default_factory=HassConfig, description="Home Assistant MQTT discovery (opt-in)."
    )

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol_text(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v  # YAML `5` is a number

    @property
    def expiry_s(self) -> int | None:
        """The message expiry of the retained per-camera states, or None (3.1.1, or switched off)."""
        return self.state_expiry_s if self.protocol == "5" and self.state_expiry_s > 0 else None


class ThumbnailsConfig(EdgedModel):
    enabled: bool = Field(
        True, description="Keep the best crop of each event (each track with events: tracks) as a JPEG."
    )
    dir: Path | None = Field(
        None, description="Where the JPEGs go; default <state_dir>/thumbnails. Served at /events/<id>.jpg."
    )
    max_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, description="Disk cap of the folder; the oldest files are deleted first."
    )
    max_side: int = Field(
        320,
        ge=16,
        le=4096,
        description="Longest side of a thumbnail in pixels (larger crops are scaled down).",
    )
    quality: int = Field(85, ge=10, le=100, description="JPEG quality.")
    queue: int = Field(
        32, ge=1, le=4096, description="Crops waiting for the encoder; beyond it they are dropped (counted)."
    )
    publish: bool = Field(
        False, description="Also publish each thumbnail, retained, on <prefix>/<camera>/<label>/thumbnail."
    )
    publish_max_bytes: int = Field(
        128 * 1024, ge=1024, description="Larger thumbnails are kept on disk but not published."
    )


class PredictConfig(EdgedModel):
    enabled: bool = Field(
        False,
        description="Serve POST /predict: pictures through a camera's chain (or one in the request), "
        "answered with the events the camera would publish (docs/predict.md).",
    )
    max_body_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, description="Largest request body; a larger one is refused (413)."
    )
    max_pixels: int = Field(
        3840 * 2160,
        ge=1,
        description="Most pixels (width x height) of one picture, read from its header before it is "
        "decoded; a larger one is refused (413).",
    )
    max_images: int = Field(8, ge=1, le=64, description="Most pictures in one request (413 beyond).")
    max_in_flight: int = Field(
        2, ge=1, le=32, description="Requests running at once; one more is refused at once (429)."
    )
    timeout_s: float = Field(
        10.0, gt=0, description="A request whose results are not back within this is answered 504."
    )


class HealthConfig(EdgedModel):
    enabled: bool = Field(
        True, description="Serve /healthz, /readyz, /metrics, /stats and snapshots over HTTP."
    )
    bind: str = Field(
        "127.0.0.1", description="Address the health server listens on (keep it local unless firewalled)."
    )
    port: int = Field(8089, ge=0, le=65535, description="Port of the health server (0 picks a free port).")
    predict: PredictConfig = Field(
        default_factory=PredictConfig, description="POST /predict on this server (off by default)."
    )


class LoggingConfig(EdgedModel):
    level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Log level (any case: `DEBUG` is `debug`)."
    )
    json_format: bool = Field(
        False,
        description="Log JSON lines instead of text: `timestamp` (RFC 3339 UTC), `level`, `logger`, `message`, "
        "`thread`, `exception` and structured fields such as `camera` (docs/operations.md). Under systemd "
        "each line starts with the journald priority (`<3>` error, `<4>` warning, ...) either way.",
    )

    @field_validator("level", mode="before")
    @classmethod
    def _any_case(cls, v: Any) -> Any:
        return v.strip().lower() if isinstance(v, str) else v


class Config(EdgedModel):
    """Top level of edged.yaml."""

    device: DeviceConfig = Field(default_factory=DeviceConfig, description="This device.")
    logging: LoggingConfig = Field(default_factory=LoggingConfig, description="Logging.")
    state_dir: Path = Field(
        Path("/var/lib/edged"), description="Persistent state (outbox); systemd's StateDirectory."
    )
    mqtt: MqttConfig = Field(default_factory=MqttConfig, description="MQTT broker and publishing.")
    health: HealthConfig = Field(
        default_factory=HealthConfig, description="Local health and metrics HTTP server."
    )
    thumbnails: ThumbnailsConfig = Field(
        default_factory=ThumbnailsConfig, description="Event thumbnails: best crop per event or track."
    )
    models: dict[str, ModelConfig] = Field(default_factory=dict, description="Models by name.")
    cameras: dict[str, CameraConfig] = Field(default_factory=dict, description="Cameras by name.")
    allow_no_cameras: bool = Field(
        False,
        description="Let `edged run` start, and SIGHUP reloads apply, with no cameras configured (a device "
        "that is dark on purpose). Off: such a config is refused (exit 78 at start; a reload keeps the "
        "running config), since an emptied file would otherwise turn the device dark while it reports ready.",
    )

    @field_validator("models", "cameras")
    @classmethod
    def _names(cls, v: dict[str, Any]) -> dict[str, Any]:
        for name in v:
            if not re.match(NAME_RE, name):
                raise ValueError(f"name {name!r} may only use letters, digits, '_' and '-'")
        return v

    @property
    def topic_prefix(self) -> str:
        return (self.mqtt.prefix or f"edged/{self.device.name}").rstrip("/")


def reference_problems(cfg: Config) -> list[tuple[tuple[str | int, ...], str]]:
    """Cross-references pydantic cannot see field by field: (key path, reason) for each problem."""
    problems: list[tuple[tuple[str | int, ...], str]] = []
    for cam_name, cam in cfg.cameras.items():
        problems += chain_problems(cam.chain, cfg.models, ("cameras", cam_name, "chain"))
    return problems


def chain_problems(
    chain: list[StageConfig], models: Collection[str], at: tuple[str | int, ...] = ("chain",)
) -> list[tuple[tuple[str | int, ...], str]]:
    """A chain's references (its models, its stages' `on`): (key path under `at`, reason) per problem.
    A camera's chain in the config, or one sent to POST /predict."""
    problems: list[tuple[tuple[str | int, ...], str]] = []
    seen: set[str] = set()
    for i, stage in enumerate(chain):
        where: tuple[str | int, ...] = (*at, i)
        if stage.model not in models:
            known = ", ".join(sorted(models)) or "none defined"
            problems.append(((*where, "model"), f"unknown model {stage.model!r} (models: {known})"))
        if stage.stage_name in seen:
            problems.append(((*where, "name"), f"stage name {stage.stage_name!r} is used twice; set `name:`"))
        if stage.on is not None and stage.on not in seen:
            problems.append(((*where, "on"), f"{stage.on!r} is not an earlier stage of this chain"))
        if stage.on is None and i > 0:
            problems.append(
                (where, "only the first stage runs on the whole frame; set `on:` to an earlier stage")
            )
        seen.add(stage.stage_name)
    return problems
