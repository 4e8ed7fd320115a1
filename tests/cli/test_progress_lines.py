"""line_progress: plain progress lines for a stderr that is not a terminal, at a bounded rate (fake clock)."""

from __future__ import annotations

import io
import sys

import pytest

from musicsae_cli.progress import format_duration, format_rate, line_progress


class Clock:
    def __init__(self) -> None:
        self.t = 100.0
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        return self.t


def _factory(**kw):
    stream, clock = io.StringIO(), Clock()
    return line_progress(stream=stream, clock=clock, **kw), stream, clock


def _lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_counted_task_rate_eta_and_final_line():
    progress, stream, clock = _factory()
    with progress("Training", 5000) as bar:
        clock.t += 3.0
        bar.advance(930)  # 18.6%: a 5% step crossed -> one line
        assert _lines(stream) == ["Training: 930/5000 (18%), 310/s, ETA 13 s"]
        clock.t += 13.0
        bar.advance(4070)
    assert _lines(stream)[-1] == "Training: 5000/5000 (100%) in 16 s"
    assert len(_lines(stream)) == 2  # reaching the total leaves the rest to the final line


def test_lines_every_five_percent_or_ten_seconds_and_no_more_often():
    progress, stream, clock = _factory()
    with progress("Encoding", 1000) as bar:
        for _ in range(1000):  # 1 item per 0.1 s: 5% (50 items) every 5 s, before 10 s pass
            clock.t += 0.1
            bar.advance()
    lines = _lines(stream)
    assert len(lines) == 19 + 1  # 5%, 10%, ..., 95%, then the final line
    assert lines[0] == "Encoding: 50/1000 (5%), 10.0/s, ETA 1 min 35 s"
    assert lines[1].startswith("Encoding: 100/1000 (10%)")
    assert lines[-1] == "Encoding: 1000/1000 (100%) in 1 min 40 s"

    progress, stream, clock = _factory()
    with progress("Slow", 1000) as bar:
        for _ in range(60):  # 1 item per second: 5% takes 50 s, so a line every 10 s
            clock.t += 1.0
            bar.advance()
    lines = _lines(stream)
    assert [line.split(" (")[0] for line in lines[:5]] == [f"Slow: {n}/1000" for n in (10, 20, 30, 40, 50)]
    assert lines[0] == "Slow: 10/1000 (1%), 1.00/s, ETA 16 min 30 s"
    assert lines[-1] == "Slow: 60/1000 (6%) in 1 min 00 s"  # exited early: the final line says how far it got


def test_fast_tasks_write_nothing_slow_ones_their_final_line_and_advance_is_cheap():
    progress, stream, clock = _factory()
    with progress("Chunking", 100) as bar:
        for _ in range(100):
            clock.t += 0.001
            bar.advance()
    assert _lines(stream) == []  # over before the first line was due: nothing to report
    progress, stream, clock = _factory()
    with progress("Chunking", 100) as bar:
        clock.t += 0.5
        bar.advance(99)
        clock.t += 1.0
        bar.advance()
    assert _lines(stream) == ["Chunking: 100/100 (100%) in 1.5 s"]
    # no I/O until a line is due: one clock read per advance at most
    progress, stream, clock = _factory()
    with progress("Batches", 10**6) as bar:
        reads = clock.reads
        for _ in range(1000):
            bar.advance()
        assert clock.reads - reads <= 1000 and stream.getvalue() == ""


def test_unknown_total_prints_count_and_rate():
    progress, stream, clock = _factory()
    with progress("Reading", None) as bar:
        for _ in range(25):
            clock.t += 1.0
            bar.advance(40)
    lines = _lines(stream)
    assert lines == ["Reading ...", "Reading: 400, 40.0/s", "Reading: 800, 40.0/s", "Reading: 1000 in 25 s (40.0/s)"]


def test_phases_print_a_start_and_an_end_line():
    progress, stream, clock = _factory()
    with progress("t-SNE", 1) as bar:
        clock.t += 65.0
        bar.advance()
    with progress("UMAP", None):
        clock.t += 4.25
    assert _lines(stream) == ["t-SNE ...", "t-SNE: done in 1 min 05 s", "UMAP ...", "UMAP: done in 4.2 s"]


def test_nothing_more_on_an_exception_and_default_stream_is_stderr_at_write_time(monkeypatch):
    progress, stream, clock = _factory()
    with pytest.raises(RuntimeError), progress("Fitting", 10) as bar:
        bar.advance(3)
        raise RuntimeError("boom")
    assert stream.getvalue() == ""
    later = io.StringIO()
    progress = line_progress(clock=Clock())
    monkeypatch.setattr(sys, "stderr", later)
    with progress("Silhouette", 1) as bar:
        bar.advance()
    assert _lines(later) == ["Silhouette ...", "Silhouette: done in 0.0 s"]


def test_human_numbers():
    assert format_duration(0.44) == "0.4 s" and format_duration(12.4) == "12 s"
    assert format_duration(65) == "1 min 05 s" and format_duration(7380) == "2 h 03 min"
    assert format_rate(310.4) == "310/s" and format_rate(31.24) == "31.2/s" and format_rate(3.125) == "3.12/s"
    assert format_rate(1 / 40) == "40 s each" and format_rate(0) == "0/s"
    with pytest.raises(ValueError):
        line_progress(fraction=0)
