"""The bounds a daemon enforces on every session, and the gRPC message size they imply."""

from __future__ import annotations

from dataclasses import dataclass

from ..proto.wire import UHD_DCI_PIXELS, PixelFormat, max_message_bytes


@dataclass(frozen=True)
class Limits:
    """Session bounds (how many sessions, per user, how large a frame, how many frames queued per session, how much
    memory, how long idle) and the bounds of the other streams (reflection, health watches, metrics connections)."""

    max_sessions: int = 8
    max_sessions_per_user: int = 0  # 0: half of max_sessions (rounded up), so that one user cannot hold every slot
    max_frame_pixels: int = UHD_DCI_PIXELS
    frames_in_flight: int = 4
    max_passes: int = 12
    idle_timeout: float = 600.0  # seconds a session may go without input or without reading output; 0 = never
    start_timeout: float = 60.0  # seconds a session has to send its config and its first frame; 0 = the idle timeout
    max_other_streams: int = 4  # reflection streams open at once
    max_health_watches: int = 256  # health-watch streams open at once; a new one ends the oldest of the busiest caller
    stream_idle_timeout: float = 60.0  # seconds such a stream (or a metrics connection) may stay idle; 0 = never
    memory_budget: int = 0  # bytes the sessions' frames may hold together (mpd-daemon sizes it); 0 = no budget
    max_memory_per_user: int = 0  # bytes of the budget one user's sessions may hold together; 0: half the budget

    def __post_init__(self) -> None:
        for name in ("max_sessions", "max_frame_pixels", "frames_in_flight", "max_passes", "max_other_streams",
                     "max_health_watches"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.max_sessions_per_user < 0:
            raise ValueError(f"max-sessions-per-user must be at least 1 (or 0 for the default), "
                             f"got {self.max_sessions_per_user}")
        if self.memory_budget < 0:
            raise ValueError(f"memory budget must be 0 (none) or positive, got {self.memory_budget}")
        if self.max_memory_per_user < 0:
            raise ValueError(f"max-memory-per-user must be positive (or 0 for the default), got "
                             f"{self.max_memory_per_user}")
        for name in ("idle_timeout", "start_timeout", "stream_idle_timeout"):
            if not getattr(self, name) >= 0:  # NaN fails too
                raise ValueError(f"{name.replace('_', '-')} must be 0 (never) or positive, got {getattr(self, name):g}")

    @property
    def sessions_per_user(self) -> int:
        """The sessions one user may hold at once: ``max_sessions_per_user``, by default half the slots."""
        return min(self.max_sessions, self.max_sessions_per_user or -(-self.max_sessions // 2))

    @property
    def memory_per_user(self) -> int:
        """The bytes of the budget one user's sessions may reserve together: ``max_memory_per_user``, by default half
        the budget, never more than the budget (0: no budget)."""
        if not self.memory_budget:
            return 0
        return min(self.memory_budget, self.max_memory_per_user or -(-self.memory_budget // 2))

    @property
    def first_frame_timeout(self) -> float:
        """Seconds a session has to send its config, and then its first frame (0: no limit)."""
        if self.start_timeout and self.idle_timeout:
            return min(self.start_timeout, self.idle_timeout)
        return self.start_timeout or self.idle_timeout

    @property
    def max_frame_bytes(self) -> int:
        """The largest frame in bytes: the pixel limit in rgb48le."""
        return self.max_frame_pixels * PixelFormat.RGB48LE.bytes_per_pixel

    @property
    def max_message_bytes(self) -> int:
        """gRPC send/receive limit: one largest frame plus its envelope (4K rgb48le by default)."""
        return max_message_bytes(self.max_frame_pixels)
