"""The outbox's on-disk record format: encoding, decoding and the resynchronising scan.

Pure functions over bytes; no I/O and no state, so any thread may call them. A record is a 28-byte
header (magic, body length, CRC32 of seq+ts+body, seq, ts) followed by a JSON body
{"id", "camera", "topic", "ts", "payload"}. Ack logs are arrays of 8-byte big-endian sequence numbers.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass
from typing import Any

MAGIC = b"\xedOB\x01"  # 0xED never occurs in ASCII JSON, so a resync cannot lock onto a body byte
HEADER = struct.Struct(">4sIIQd")  # magic, body length, crc32(seq, ts, body), seq, ts
SEQ = struct.Struct(">Q")
MAX_RECORD = 64 * 1024 * 1024


@dataclass(frozen=True)
class OutboxRecord:
    seq: int
    id: str
    camera: str
    topic: str
    ts: float
    payload: dict[str, Any]

    def payload_bytes(self) -> bytes:
        return json.dumps(self.payload, separators=(",", ":"), ensure_ascii=False).encode()


def crc(seq: int, ts: float, body: bytes) -> int:
    return zlib.crc32(body, zlib.crc32(struct.pack(">Qd", seq, ts)))


def encode(rec: OutboxRecord) -> bytes:
    """The record as it is appended to a segment."""
    body = json.dumps(
        {"id": rec.id, "camera": rec.camera, "topic": rec.topic, "ts": rec.ts, "payload": rec.payload},
        separators=(",", ":"),
    ).encode()
    return HEADER.pack(MAGIC, len(body), crc(rec.seq, rec.ts, body), rec.seq, rec.ts) + body


def decode(data: bytes, seq: int) -> OutboxRecord | None:
    """The record in `data` (exactly one encoded record), or None if it is not record `seq` intact."""
    if len(data) < HEADER.size:
        return None
    magic, length, want, got_seq, ts = HEADER.unpack_from(data)
    body = data[HEADER.size :]
    if magic != MAGIC or got_seq != seq or len(body) != length or crc(got_seq, ts, body) != want:
        return None
    try:
        d = json.loads(body)
        return OutboxRecord(seq, d["id"], d["camera"], d["topic"], float(d["ts"]), d["payload"])
    except (ValueError, KeyError, TypeError):
        return None


def scan(data: bytes) -> tuple[list[tuple[int, float, int, int]], int]:
    """Valid records as (seq, ts, offset, total length) and the number of bad stretches."""
    out: list[tuple[int, float, int, int]] = []
    bad = 0
    pos, end = 0, len(data)
    while pos < end:
        ok = False
        if end - pos >= HEADER.size:
            magic, length, want, seq, ts = HEADER.unpack_from(data, pos)
            body_end = pos + HEADER.size + length
            if magic == MAGIC and length <= MAX_RECORD and body_end <= end:
                ok = crc(seq, ts, data[pos + HEADER.size : body_end]) == want
        if ok:
            out.append((seq, ts, pos, body_end - pos))
            pos = body_end
            continue
        bad += 1
        nxt = data.find(MAGIC, pos + 1)
        pos = end if nxt < 0 else nxt
    return out, bad
