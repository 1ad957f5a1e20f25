"""The model slot: which engine and decoder a model runs now, and every switch of it (background build,
new file, shadow check, forced switch, rollback). `slot.py` is the owner; the rest are its parts."""

from edged.serving.slot.requests import RESULTS, FileSwitching, SlotEntry, SwitchEvent, SwitchRequest
from edged.serving.slot.shadow import ShadowTolerance
from edged.serving.slot.slot import ModelSlot

__all__ = [
    "RESULTS",
    "FileSwitching",
    "ModelSlot",
    "ShadowTolerance",
    "SlotEntry",
    "SwitchEvent",
    "SwitchRequest",
]
