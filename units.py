"""Human-readable byte sizes, for the daemon's messages and the client's status display."""

from __future__ import annotations


def format_bytes(n: int) -> str:
    """1536 -> '1.5 KiB' (binary units, one decimal)."""
    value, unit = float(n), "B"
    for bigger in ("KiB", "MiB", "GiB", "TiB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
