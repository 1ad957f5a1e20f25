"""Thread names of the model servers: `<role>:<model>`, cut to the kernel's 15 bytes (the model's name
is what gets shortened), so `top -H`, `ps -L` and py-spy tell them apart (edged.observability.threads
hands a thread's Python name to the OS).

Roles: `srv` (a server's batch thread), `dec` (its decode thread), `adopt` (waits for a background build
and warms its engine), `load` (loads and warms a candidate file).
"""

from __future__ import annotations

OS_NAME_BYTES = 15  # what prctl(PR_SET_NAME) keeps


def thread_name(role: str, model: str) -> str:
    """`role:model`, at most 15 bytes of UTF-8 (never a cut character)."""
    name = f"{role}:{model}".encode()[:OS_NAME_BYTES]
    return name.decode("utf-8", "ignore")
