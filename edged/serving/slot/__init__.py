"""The model slot: which engine and decoder a model runs now, and every switch of it (background build,
new file, shadow check, forced switch, rollback). `slot.py` is the owner (`ModelSlot`); `builds.py`,
`candidates.py`, `shadow_run.py`, `shadow.py`, `switch.py` and `decoder.py` its parts; `requests.py`
what it holds and reports."""
