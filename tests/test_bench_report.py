"""The benchmark's tables say what they average over."""

from __future__ import annotations

import json

from multipassdedup.bench.cadence import main as cadence_main
from multipassdedup.bench.report import summary_table


def result(method: str, clip: str, psnr: float, judder: float) -> dict:
    character = {"name": "A", "hold": 2, "judder_px": judder, "lag_frames": 0.5, "coverage": 1.0, "lost": 0}
    return {"model": "rife", "clip": clip, "method": method, "order": 0 if method == "plain" else 1,
            "frames_out": 10, "model_calls": 5,
            "score": {"psnr": psnr, "ssim": 0.9, "psnr_at_best": psnr + 1, "ssim_at_best": 0.95, "best_shift": 0.25,
                      "characters": [character]}}


RESULTS = [result("plain", "a", 20.0, 1.0), result("plain", "b", 30.0, 3.0), result("mpd n_pass=3", "a", 26.0, 0.5)]


def rows(table: str) -> dict[str, list[str]]:
    lines = table.splitlines()[2:]
    return {cells[0]: cells[1:] for cells in ([c.strip() for c in line.strip("|").split("|")] for line in lines)}


def test_summary_averages_over_the_clips_each_method_ran_on_and_counts_them() -> None:
    table = summary_table(RESULTS, "rife")
    assert table.splitlines()[0].endswith("| model calls / output frame | clips |")
    got = rows(table)
    assert got["plain"][0] == "25.00" and got["plain"][4] == "2.00" and got["plain"][-1] == "2"
    assert got["mpd n_pass=3"][0] == "26.00" and got["mpd n_pass=3"][-1] == "1"


def test_report_from_files_keeps_only_the_clips_asked_for(tmp_path, capsys) -> None:
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"machine": {}, "results": RESULTS}))
    assert cadence_main(["--report-from", str(path), "--clips", "a"]) == 0
    got = rows(capsys.readouterr().out.split("\n\n")[0].split("\n", 1)[1])
    assert got["plain"][0] == "20.00" and got["plain"][-1] == "1"


def test_adaptive_table_states_each_goal_against_plain_and_n3c() -> None:
    from multipassdedup.bench.report import ADAPTIVE, N3C, PLAIN, adaptive_table

    def run(method: str, psnr: float, judder: float, calls: int) -> dict:
        return result(method, "a", psnr, judder) | {"model_calls": calls, "seconds": 2.0}

    met = adaptive_table([run(PLAIN, 30.0, 2.0, 5), run(N3C, 29.0, 1.0, 10), run(ADAPTIVE, 29.95, 1.15, 11)], "rife")
    assert met.splitlines()[-1].endswith("| met, met, met |")
    assert "1.15 (1.15x)" in met and "1.10 (1.10x)" in met  # judder and calls against n_pass=3 compensated
    missed = adaptive_table([run(PLAIN, 30.0, 2.0, 5), run(N3C, 29.0, 1.0, 10), run(ADAPTIVE, 29.8, 1.2, 12)], "rife")
    assert missed.splitlines()[-1].endswith("| **not met**, **not met**, **not met** |")


def footage_result(precision: str | None, case: str, method: str, psnr: float) -> dict:
    record = {"model": "rife", "case": case, "what": "", "held": False, "frames_in": 20, "size": [256, 144],
              "method": method, "frames_out": 40, "model_calls": 20, "seconds": 1.0, "held_groups": 0, "psnr": psnr,
              "psnr_between": psnr, "input_kept": float("inf"), "inputs_altered": 0, "inputs_shown": 20,
              "frames_scored": 20}
    return record if precision is None else {**record, "precision": precision}


def test_real_footage_keeps_precisions_apart_and_shows_them_side_by_side() -> None:
    from multipassdedup.bench.real_footage import report, result_key

    fp32_old = footage_result(None, "bbb-ones", "plain", 37.31)  # a record from before precisions were kept
    bf16 = footage_result("bf16", "bbb-ones", "plain", 37.25)
    assert result_key(fp32_old) != result_key(bf16)
    assert result_key(fp32_old) == result_key(footage_result("fp32", "bbb-ones", "plain", 1.0))
    text = report({"results": [fp32_old, bf16, footage_result("bf16", "bbb-twos", "plain", 30.0)]})
    assert "### rife: PSNR" in text and "### rife bf16: PSNR" in text
    side = text.split("### rife: bf16 against fp32")[1]
    assert "| bbb-ones | plain | 37.31 | 37.25 | -0.060 | 0 / 0 |" in side
    assert "bbb-twos" not in side  # no fp32 run of that case to compare with
    assert "largest difference -0.060 dB over 1 runs" in side
