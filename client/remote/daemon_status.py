"""``mpd-client --status``: a daemon's Status as a few lines a person reads."""

from __future__ import annotations

from ...escaping import escaped
from ...proto import mpd_pb2
from ...units import format_bytes
from ..progress import format_duration


def format_status(address: str, st: mpd_pb2.StatusResponse) -> str:
    """Header lines (device, sessions, memory, queue), then one row per running session."""
    budget = (f"{format_bytes(st.memory_reserved_bytes)} of {format_bytes(st.memory_budget_bytes)} reserved"
              if st.memory_budget_bytes else f"no budget ({format_bytes(st.memory_reserved_bytes)} in use)")
    if 0 < st.max_memory_per_user_bytes < st.memory_budget_bytes:  # older daemons: 0, no share
        budget += f", at most {format_bytes(st.max_memory_per_user_bytes)} per user"
    lines = [
        f"daemon at {address}: {st.device}, models {', '.join(st.models)}, up {format_duration(st.uptime_seconds)}"
        + (" - draining: finishing its sessions, taking no new ones" if st.draining else ""),
        f"sessions: {st.sessions_active} of {st.max_sessions} running, "
        + (f"at most {st.max_sessions_per_user} per user" if st.max_sessions_per_user else "no cap per user")
        + f" ({st.sessions_created} accepted, {st.sessions_released} ended, {st.sessions_rejected} refused as busy)",
        f"session memory: {budget}; process {format_bytes(st.rss_bytes)} resident"
        + (f", device {format_bytes(st.device_memory_bytes)}" if st.device_memory_bytes else ""),
        f"device queue: {st.queue_depth} waiting; {st.batches} batches so far, {st.cross_session_batches} "
        f"shared between sessions, largest {st.max_batch_size_seen} pairs",
    ]
    if st.model_info:  # the precisions served, the first each model's default, and why (older daemons: absent)
        lines.insert(1, "precisions: " + "; ".join(f"{m.name} {', '.join(m.precisions)} ({m.precision_reason})"
                                                   for m in st.model_info))
    if st.sessions:
        rows = [("SESSION", "USER", "PEER", "IN", "OUT", "AGE", "MEMORY")] + [
            (escaped(s.session_id), escaped(s.user), escaped(s.peer), str(s.frames_in), str(s.frames_out),
             format_duration(s.seconds), format_bytes(s.memory_bytes)) for s in st.sessions]
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines += ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)
