"""The split-cost benchmark's clip has the cuts and the long shot it claims, and its table is the formula."""

from itertools import accumulate
from pathlib import Path

from multipassdedup.bench.split_cost import LONG_SHOT, SHORT_SHOTS, make_clip, overlap_table, time_scan


def test_the_clip_has_the_cuts_the_client_finds_and_a_long_last_shot(tmp_path: Path) -> None:
    src = tmp_path / "clip.mkv"
    assert make_clip(src, 64, 64) == sum(SHORT_SHOTS) + LONG_SHOT
    _, cuts = time_scan(src, 2, "60")
    assert cuts == list(accumulate(SHORT_SHOTS))        # every shot start after the first, nothing else


def test_the_overlap_table_is_4n_minus_3_over_the_length() -> None:
    table = {row["n_pass"]: row for row in overlap_table([50, 1200], [1, 2, 6])}
    assert [table[n]["overlap_frames"] for n in (1, 2, 6)] == [1, 5, 21]
    assert table[2]["share"]["1200"] == 5 / 1200 and table[6]["share"]["50"] == 21 / 50
