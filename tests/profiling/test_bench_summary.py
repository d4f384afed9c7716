"""How the pipeline benchmark sums up repeated runs."""

from __future__ import annotations

from profiling.bench_pipeline import _run_line, median_run


def _run(cps: int, rss: float, uss: float) -> dict[str, float]:
    return {"chunks_per_second": cps, "peak_rss_mb_per_worker": rss, "peak_uss_mb_per_worker": uss}


def test_median_run_reports_the_middle_figure_every_figure_and_the_highest_peaks() -> None:
    runs = [_run(4100, 140.0, 47.0), _run(3900, 150.0, 45.0), _run(4400, 145.0, 49.0)]
    result = median_run(runs)
    assert result["chunks_per_second"] == 4100
    assert result["chunks_per_second_runs"] == [4100, 3900, 4400]
    assert result["peak_rss_mb_per_worker"] == 150.0
    assert result["peak_uss_mb_per_worker"] == 49.0


def test_one_run_is_reported_as_it_is() -> None:
    only = _run(4000, 140.0, 46.0)
    assert median_run([only]) == only


def test_an_even_number_of_runs_reports_the_lower_middle() -> None:
    runs = [_run(c, 1.0, 1.0) for c in (4000, 3000, 5000, 4500)]
    assert median_run(runs)["chunks_per_second"] == 4000


def test_a_run_line_gives_the_cpu_of_each_part_and_skips_parts_not_measured() -> None:
    run = {
        "chunks_per_second": 4500,
        "cpu_us_per_chunk": {"workers": 230.4, "postgres": None, "emulator": 38.0, "all": 410.2},
        "cores_busy_percent": 91.26,
    }
    line = _run_line(run)
    assert line == (
        "4500 chunks/s; CPU 410 µs per chunk (workers 230, emulator 38), cores 91 % busy"
    )
