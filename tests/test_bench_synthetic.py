"""The synthetic clips' truth agrees with the frames they ship."""

import numpy as np
import torch

from multipassdedup.bench.clips import CLIP_NAMES, make_clip
from multipassdedup.bench.synthetic import Character, Clip, MotionPath, PaintedBackground, Shot
from multipassdedup.bench.tracking import track_colour
from multipassdedup.core.layers.frames import to_tensor
from multipassdedup.core.pipeline.scene import SceneDetector

W, H = 192, 108


def one_character_clip(hold: int, pan: float) -> Clip:
    ch = Character("A", (225.0, 40.0, 170.0), 9.0, MotionPath((40.0, 60.0), (3.3, 0.4), sway=2.0, bob=1.5), hold=hold,
                   phase=1)
    return Clip("one", W, H, 10, (Shot(0, PaintedBackground(7, W, H, pan=(pan, 0.0)), (ch,)),))


def test_held_frame_is_the_ideal_frame_at_the_drawing_time():
    clip = one_character_clip(hold=3, pan=0.0)
    ch = clip.character("A")
    for i in range(clip.n_frames):
        d = ch.drawing_time(i)
        assert d <= i < d + 3
        assert np.array_equal(clip.held_frame(i), clip.ideal_frame(d)), i


def test_held_frames_repeat_the_drawing_within_a_hold_but_not_across():
    clip = one_character_clip(hold=2, pan=0.0)
    frames = clip.frames()
    # phase 1: drawings start at 1, 3, 5, ...
    assert np.array_equal(frames[1], frames[2]) and np.array_equal(frames[3], frames[4])
    assert not np.array_equal(frames[2], frames[3])


def test_each_character_in_a_mixed_clip_sits_where_its_drawing_time_puts_it():
    clip = make_clip("mixed_static", W, H, 12)
    for i in range(clip.n_frames):
        held = clip.held_frame(i)
        for ch in clip.characters:
            d = ch.drawing_time(i)
            # The static background makes the character's box in the held frame equal the ideal frame's at d.
            x, y = ch.path.at(d)
            left, top, right, bottom = ch.extent()
            box = (slice(max(0, int(y + top)), int(y + bottom) + 1), slice(max(0, int(x + left)), int(x + right) + 1))
            assert np.array_equal(held[box], clip.ideal_frame(d)[box]), (i, ch.name)


def test_panning_background_moves_on_ones_while_characters_hold():
    clip = make_clip("mixed_pan", W, H, 8)
    frames = clip.frames()
    for i in range(len(frames) - 1):
        assert not np.array_equal(frames[i], frames[i + 1])
    a = clip.character("A")  # on twos
    for i in range(8):
        s = track_colour(frames[i], a.colour)
        hx, hy = clip.held_marker_position("A", i)
        assert abs(s.x - hx) < 0.6 and abs(s.y - hy) < 0.6


def test_content_on_ones_ships_exactly_the_ideal_frames():
    clip = make_clip("ones_pan", W, H, 6)
    for i in range(clip.n_frames):
        assert np.array_equal(clip.held_frame(i), clip.ideal_frame(float(i)))
    assert not np.array_equal(clip.ideal_frame(2.5), clip.held_frame(2))


def test_cut_switches_shot_at_its_frame_and_the_engine_detects_it():
    clip = make_clip("cut", W, H, 12)
    assert clip.cuts == [6]
    assert clip.shot_at(5.99) is clip.shots[0] and clip.shot_at(6.0) is clip.shots[1]
    frames = clip.frames()
    det = SceneDetector(0.3)
    cpu = torch.device("cpu")
    changes = [i for i in range(len(frames) - 1)
               if det.is_change(to_tensor(frames[i], cpu), to_tensor(frames[i + 1], cpu))]
    assert changes == [5]


def test_character_colours_are_unique_and_absent_from_backgrounds():
    for name in CLIP_NAMES:
        clip = make_clip(name, W, H, 8)
        colours = [c.colour for c in clip.characters]
        assert len(set(colours)) == len(colours)
        for shot in clip.shots:
            bg = np.round(shot.background.render(0.0)).astype(np.uint8)
            for c in clip.characters:
                assert track_colour(bg, c.colour) is None, (name, c.name)
