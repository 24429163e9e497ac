"""The colour tracker and the judder/lag measures give known answers."""

import math
from fractions import Fraction

import numpy as np

from multipassdedup.bench.clips import make_clip
from multipassdedup.bench.evaluate import IdealFrames, output_times, score_characters
from multipassdedup.bench.tracking import best_lag, judder, track_colour


def test_tracker_finds_each_character_within_a_pixel_at_subpixel_positions():
    clip = make_clip("mixed_pan", 256, 144, 12)
    for t in (0.0, 1.37, 4.5, 7.81):
        frame = clip.ideal_frame(t)
        for ch in clip.characters:
            seen = track_colour(frame, ch.colour)
            mx, my = clip.marker_position(ch.name, t)
            assert math.hypot(seen.x - mx, seen.y - my) < 1.0, (t, ch.name, seen, (mx, my))


def test_tracker_on_a_plain_disc():
    frame = np.zeros((40, 60, 3), np.uint8)
    yy, xx = np.indices(frame.shape[:2])
    frame[(xx - 21) ** 2 + (yy - 17) ** 2 <= 36] = (200, 10, 10)
    s = track_colour(frame, (200.0, 10.0, 10.0))
    assert abs(s.x - 21) < 1e-9 and abs(s.y - 17) < 1e-9
    assert track_colour(frame, (10.0, 200.0, 10.0)) is None


def test_judder_zero_for_ideal_motion_and_known_for_held_motion():
    ideal = [(float(k), 0.0) for k in range(10)]
    seg = [0] * 10
    assert judder(ideal, ideal, seg)[0] == 0.0
    # moves 2, 0, 2, 0 ... against an ideal 1 px per frame: errors +1, -1, ... -> std 1
    held = [(float(k - k % 2), 0.0) for k in range(10)]
    value, pairs = judder(held, ideal, seg)
    assert pairs == 9 and abs(value - math.sqrt(1 - (1 / 9) ** 2)) < 1e-9


def test_judder_skips_pairs_across_a_cut_and_missing_sightings():
    ideal = [(float(k), 0.0) for k in range(6)]
    measured = [(0.0, 0.0), (1.0, 0.0), (100.0, 0.0), (101.0, 0.0), None, (105.0, 0.0)]
    value, pairs = judder(measured, ideal, [0, 0, 1, 1, 1, 1])
    assert pairs == 2 and value == 0.0


def test_best_lag_recovers_a_known_delay():
    def path(t):
        return 3.0 * t + 2.0 * math.sin(t), 0.5 * t

    times = [k * 0.4 for k in range(30)]
    measured = [path(t - 1.25) for t in times]
    assert best_lag(measured, times, path, [i * 0.05 for i in range(-20, 80)]) == 1.25


def test_last_drawing_time_is_the_last_new_drawing_of_the_characters_shot():
    clip = make_clip("cut", 256, 144, 24)
    first, second = clip.shots[0], clip.shots[1]
    for c in first.characters:  # the first shot ends at the cut: its last drawing starts before it
        last = clip.last_drawing_time(c.name)
        assert last < second.start <= last + c.hold and c.drawing_time(last - first.start) == last - first.start
    for c in second.characters:
        last = clip.last_drawing_time(c.name)
        assert clip.n_frames - c.hold <= last <= clip.n_frames - 1


def test_judder_is_counted_up_to_each_characters_last_drawing():
    """A method that stops a character at its last drawing (where the input shows it last) is not charged for
    the ideal path beyond it, which needs a drawing the input does not have; a stop before it is charged."""
    clip = make_clip("mixed_static", 256, 144, 12)
    ideal = IdealFrames(clip)
    times = output_times(clip, Fraction(60), 1000)
    name = next(c.name for c in clip.characters if c.hold == 2)
    last = clip.last_drawing_time(name)
    assert last < clip.n_frames - 1

    def judder_of(stop: float) -> float:
        frames = [clip.ideal_frame(min(t, stop)) for t in times]
        return next(s.judder_px for s in score_characters(clip, frames, times, ideal) if s.name == name)

    smooth, stopped_at_last, stopped_before = judder_of(math.inf), judder_of(last), judder_of(last - 2)
    assert abs(stopped_at_last - smooth) < 0.05
    assert stopped_before > smooth + 0.3
