"""Random access to an interpolated stream: output frame ``k`` is the same frame whatever order frames are asked in.

The engine is a stream: a session takes input frames in order and returns output frames in order. A frame
server asks for frames in any order and from several threads. ``RandomAccess`` serves output step ``k``:

- from its cache of finished frames (bounded, least recently used first out);
- else from a live session that has not passed ``k`` yet and is near it: the session streams on (sequential
  requests go through one session, its outputs cached as they come);
- else from a new session that starts where the engine can start without changing any output (a seek):

  * keyframe re-timing (``adaptive``): at the first frame of ``k``'s shot. Its hold map looks back to the shot's
    start and its budget of group renderings carries from frame to frame, so only a shot's start gives its frames;
    a shot starts at a cut the client finds for certain (``client.chunks.scene_cuts``, the test ``--jobs`` splits
    at: SSIM below the threshold by a margin, so the engine cuts there too) or at the stream's first frame;
  * the passes with delay compensation: at a certain cut as above when there is one in reach, else mid-shot with
    the lead-in ``--jobs`` gives a piece (``client.chunks.plan.lead_in``, ``3 (n - 1)`` frames): from the handover
    ``a`` on, every value the outputs read is the whole stream's, computed in batches of the same make-up; the
    handover is kept before any possible cut (SSIM below the threshold plus the margin) after ``k``'s time, and the
    outputs before a possible cut inside the lead-in are not kept (the engine may or may not start a shot there);
  * the reference timing (``compensate_delay=False``): a stream is one shot, so at the first frame.

  A session that starts at input ``s > 0`` is told its index (``first_index``): its output steps are the stream's
  from ``ceil(s r)`` on, as a chunk of ``--jobs`` is.

All engine work runs one session at a time (a lock): a daemon batches the model calls of concurrent sessions
together, and a batch's make-up changes the float rounding, so two sessions of one clip at once could give frames
that differ in their last bits. Memory is bounded whatever the access pattern: at most ``max_sessions`` live
sessions (each holds the engine's bounded pipeline), ``cache_frames`` finished frames, a few dozen input frames
and thumbnails, and the last 65536 scene-cut measures (a clip's length may be all but unbounded: mpv gives its
``video_in`` 134 million frames).
"""

from __future__ import annotations

import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np

from ...settings import EngineSettings
from ..chunks.plan import lead_in
from ..chunks.scene_cuts import CUT_MARGIN, ssim, thumbnail
from ..engine import Engine, output_frames_for
from ..media.colour import copy_sources

log = logging.getLogger(__name__)

INPUT_FRAMES = 32  # decoded input frames kept (a session's recent inputs, the frames a seek scans)
THUMBNAILS = 64  # 32x32 scene-cut thumbnails kept
MEASURES = 1 << 16  # scene-cut measures (SSIM of neighbouring inputs) kept, 4 bytes each
MAX_FRAMES = 2 ** 31 - 1  # VapourSynth's clip length is an int (mpv gives its video_in INT_MAX / 16 frames)
# A live session streams on to a later step rather than a new session start when it is at most this many input
# frames farther from it than the new session would start (a new session costs a connection and a start).
SESSION_COST = 4


@dataclass
class SourceFrame:
    """One input frame: the engine's RGB, the packed samples it came from, the properties outputs keep of it."""

    rgb: np.ndarray
    packed: bytes
    props: dict[str, Any] = field(default_factory=dict)


@dataclass
class OutputFrame:
    """One finished output frame: packed samples in the clip's format, and its frame properties."""

    packed: bytes
    props: dict[str, Any]


@dataclass(frozen=True)
class Start:
    """Where a session starts (its first input frame) and its first output step that is the whole stream's."""

    index: int
    valid_from: int


class _Session:
    """A live engine session over inputs ``start.index`` on, and how far it has got."""

    def __init__(self, engine: Engine, start: Start, ratio: Fraction) -> None:
        self.engine = engine
        self.start = start
        self.next_input = start.index
        self.next_step = math.ceil(start.index * ratio)  # the stream's step of its next output frame
        self.done = False

    def reaches(self, k: int) -> bool:
        """Whether streaming on produces step ``k`` as the whole stream's frame."""
        return not self.done and self.start.valid_from <= k and self.next_step <= k


class RandomAccess:
    """Output frames of one stream by step, in any order, from several threads; see the module's docstring.

    ``read(i)`` gives input frame ``i``; ``open_session(first_index)`` an engine for the stream from that frame on
    (``placement.SessionOpener.open``); ``encode(rgb, copies)`` an output frame's packed samples (``FrameCodec``).
    """

    def __init__(self, settings: EngineSettings, n_in: int, read: Callable[[int], SourceFrame],
                 open_session: Callable[[int], Engine], encode: Callable[[np.ndarray, list], bytes],
                 cache_frames: int = 32, max_sessions: int = 2) -> None:
        self.settings = settings
        self.n_in = n_in
        self.ratio = settings.ratio
        self.out_fps = settings.out_fps
        self.n_out = min(output_frames_for(n_in, settings.require_source(), self.out_fps), MAX_FRAMES)
        self.adaptive = settings.adaptive
        self.shot_timed = settings.adaptive or settings.compensate_delay  # each shot timed on its own
        self.n_pass = 0 if settings.adaptive else settings.passes
        self.duration = (self.out_fps.denominator, self.out_fps.numerator)
        self._read = read
        self._open_session = open_session
        self._encode = encode
        self.cache_frames = max(1, cache_frames)
        self.max_sessions = max(1, max_sessions)
        self._cache: OrderedDict[int, OutputFrame] = OrderedDict()
        self._inputs: OrderedDict[int, SourceFrame] = OrderedDict()
        self._thumbs: OrderedDict[int, np.ndarray] = OrderedDict()
        self._ssim: OrderedDict[int, float] = OrderedDict()  # _ssim[j]: inputs j - 1 and j
        self._sessions: list[_Session] = []
        self._lock = threading.Lock()  # the cache
        self._work = threading.Lock()  # sessions, inputs, measures: one worker at a time
        self.sessions_started = 0
        self._closed = False

    # -- frames -----------------------------------------------------------------------------

    def frame(self, k: int) -> OutputFrame:
        """Output step ``k`` (0 <= k < n_out); the engine's errors propagate (the session is then closed)."""
        if not 0 <= k < self.n_out:
            raise IndexError(f"output frame {k} requested, the clip has {self.n_out}")
        if (hit := self._cached(k)) is not None:
            return hit
        with self._work:
            if self._closed:
                raise RuntimeError("the filter has been closed (its script ended)")
            for _ in range(3):  # a second try: the daemon resolved another number of passes than planned
                if (hit := self._cached(k)) is not None:
                    return hit
                session = self._session_for(k)
                try:
                    made = self._produce(session, k)
                except BaseException:
                    self._drop(session)
                    raise
                if made is not None:
                    return made
            raise RuntimeError(f"no session produced output frame {k}")

    def close(self) -> None:
        """End every live session (a daemon frees them at once); later requests fail."""
        with self._work:
            self._closed = True
            for session in list(self._sessions):
                self._drop(session)

    def __del__(self) -> None:
        """A filter no longer referenced (its clip freed) ends its sessions: a daemon's per-user limit counts them."""
        for session in getattr(self, "_sessions", ()):
            try:
                session.engine.close()
            except Exception:  # noqa: BLE001 -- nothing to report to at this point
                pass

    def _cached(self, k: int) -> OutputFrame | None:
        with self._lock:
            hit = self._cache.get(k)
            if hit is not None:
                self._cache.move_to_end(k)
            return hit

    def _keep(self, k: int, frame: OutputFrame) -> None:
        with self._lock:
            self._cache[k] = frame
            self._cache.move_to_end(k)
            while len(self._cache) > self.cache_frames:
                self._cache.popitem(last=False)

    # -- sessions ---------------------------------------------------------------------------

    def _session_for(self, k: int) -> _Session:
        """The live session to stream on to ``k``, or a new one started where the plan says."""
        live = [s for s in self._sessions if s.reaches(k)]
        best = max(live, key=lambda s: s.next_step, default=None)
        if best is not None:
            ahead = Fraction(k - best.next_step) / self.ratio  # input frames to stream
            if ahead <= SESSION_COST or ahead <= Fraction(k) / self.ratio - self._plan(k).index + SESSION_COST:
                self._sessions.remove(best)
                self._sessions.append(best)  # most recently used last
                return best
        start = self._plan(k)
        while len(self._sessions) >= self.max_sessions:
            self._drop(self._sessions[0])
        engine = self._open_session(start.index)
        session = _Session(engine, start, self.ratio)
        self._sessions.append(session)
        self.sessions_started += 1
        log.debug("session from input %d for output %d (kept from output %d)", start.index, k, start.valid_from)
        return session

    def _drop(self, session: _Session) -> None:
        if session in self._sessions:
            self._sessions.remove(session)
        try:
            session.engine.close()
        except Exception:  # closing a session that already failed may fail too
            log.debug("closing a session failed", exc_info=True)

    def _produce(self, session: _Session, k: int) -> OutputFrame | None:
        """Stream ``session`` until it has produced step ``k`` (or the stream's end); frame ``k``, None if the
        session had to be planned again."""
        made = None
        while not session.done and session.next_step <= k:
            if session.next_input < self.n_in:
                outputs = session.engine.push(self._input(session.next_input).rgb)
                first = session.next_input == session.start.index
                session.next_input += 1
                if first and self._passes_changed(session.engine):
                    self._drop(session)  # planned for another number of passes: plan again with the daemon's
                    return None
            else:
                outputs = session.engine.flush()
                session.done = True
            for rgb in outputs:
                step = session.next_step
                session.next_step += 1
                if step >= self.n_out:  # presented at or after the input's end, as the pipe drops them
                    session.done = True
                    break
                if step >= session.start.valid_from:
                    frame = self._finish(step, rgb)
                    self._keep(step, frame)
                    if step == k:
                        made = frame
        if session.done:
            self._drop(session)
        return made

    def _passes_changed(self, engine: Engine) -> bool:
        """True when the session's daemon resolved another number of passes than planned (its ``--max-passes``);
        later plans use the daemon's."""
        inner = getattr(engine, "engine", None) or engine  # through the placement wrappers
        announced = getattr(inner, "n_pass", None)
        if self.adaptive or not announced or announced == self.n_pass:
            return False
        log.info("the daemon runs %d passes (asked for %d)", announced, self.n_pass)
        self.n_pass = announced
        return True

    # -- where a session starts -------------------------------------------------------------

    def _plan(self, k: int) -> Start:
        """The start of a session whose outputs from its ``valid_from`` on are the stream's, ``k`` among them."""
        m = Fraction(k) / self.ratio  # step k's time, in input frames
        if not self.shot_timed:
            return Start(0, 0)
        if self.adaptive:
            shot = self._shot_start(math.floor(m), 0)
            return Start(shot, self._first_step(shot))
        n = self.n_pass
        delay = Fraction(n - 1, 2)
        a = math.floor(m + delay)
        for j in range(math.floor(m) + 1, min(a, self.n_in - 1) + 1):
            if self._cut(j, CUT_MARGIN):  # the engine may end k's shot there: hand over before it
                a = j - 1
                break
        s = a - lead_in(n)
        shot = self._shot_start(math.floor(m), max(s, 0))
        if shot > s or s <= 0:
            return Start(shot, self._first_step(shot))
        valid = math.ceil((a - delay) * self.ratio)
        for j in range(s + 1, math.floor(m) + 1):
            if self._cut(j, CUT_MARGIN):  # the engine may start a shot there: what comes before is not kept
                valid = max(valid, self._first_step(j))
        return Start(s, valid)

    def _first_step(self, index: int) -> int:
        return math.ceil(index * self.ratio)

    def _shot_start(self, j: int, lowest: int) -> int:
        """The latest input frame in ``(lowest, j]`` that certainly starts a shot, else ``lowest``."""
        while j > lowest:
            if self._cut(j, -CUT_MARGIN):
                return j
            j -= 1
        return lowest

    def _cut(self, j: int, margin: float) -> bool:
        """Whether inputs ``j - 1`` and ``j`` measure as a cut with the threshold moved by ``margin``: below
        ``threshold - margin`` for a cut the engine certainly sees, ``threshold + margin`` for one it may see,
        exactly the threshold for the engine's own decision (up to float rounding)."""
        if not self.settings.scdet or j <= 0 or j >= self.n_in:
            return False
        measure = self._ssim.get(j)
        if measure is None:
            measure = self._ssim[j] = ssim(self._thumbnail(j - 1), self._thumbnail(j))
            while len(self._ssim) > MEASURES:
                self._ssim.popitem(last=False)
        return measure < self.settings.scdet_threshold + margin

    def _thumbnail(self, i: int) -> np.ndarray:
        thumb = self._thumbs.get(i)
        if thumb is None:
            thumb = self._thumbs[i] = thumbnail(self._input(i).rgb)
            while len(self._thumbs) > THUMBNAILS:
                self._thumbs.popitem(last=False)
        return thumb

    # -- frames in and out ------------------------------------------------------------------

    def _input(self, i: int) -> SourceFrame:
        frame = self._inputs.get(i)
        if frame is None:
            frame = self._inputs[i] = self._read(i)
            while len(self._inputs) > INPUT_FRAMES:
                self._inputs.popitem(last=False)
        else:
            self._inputs.move_to_end(i)
        return frame

    def _finish(self, k: int, rgb: np.ndarray) -> OutputFrame:
        """Output step ``k`` as the clip's samples (a copy of an input around its time as that input's samples, the
        pipe's choice: ``media.colour.copy_sources``), with the properties of the input at or before its time."""
        c = min(math.floor(Fraction(k) / self.ratio), self.n_in - 1)
        sources = [self._input(i) for i in copy_sources(k, self.ratio) if 0 <= i < self.n_in]
        copies = [(f.rgb, f.packed) for f in sources]
        props = dict(self._input(c).props)
        props["_DurationNum"], props["_DurationDen"] = self.duration
        if self.shot_timed:
            props["_SceneChangePrev"] = int(self._starts_shot(k))
            props["_SceneChangeNext"] = int(self._starts_shot(k + 1))
        return OutputFrame(self._encode(rgb, copies), props)

    def _starts_shot(self, k: int) -> bool:
        """Whether output step ``k`` is the first of a shot: the step at a cut's time, when shots are timed on their
        own (the frame before it held the shot's last picture)."""
        if k <= 0 or k >= self.n_out:
            return False
        c = math.floor(Fraction(k) / self.ratio)
        return self._first_step(c) == k and self._cut(c, 0.0)
