"""Lines for long work (issue 28): a log file sees a start, heartbeats and an end, no spinner."""

from __future__ import annotations

import io
import re
import time

import pytest

from search.core import progress
from search.core.progress import EpochReporter, Ticker, duration

ANSI = re.compile(r"\x1b\[|[\u2800-\u28ff]")  # escape sequences, braille spinner frames


def test_a_step_longer_than_the_interval_prints_heartbeats_with_elapsed_time():
    out = io.StringIO()
    with Ticker("measuring", interval=0.2, stream=out) as t:
        t.detail("group a")
        time.sleep(0.75)
    lines = out.getvalue().splitlines()
    assert lines[0] == "measuring ..."
    beats = [line for line in lines if line.startswith("  ... ")]
    assert 2 <= len(beats) <= 4, lines
    assert all(re.fullmatch(r"  \.\.\. \d+\.\d s elapsed: group a", line) for line in beats)
    assert re.fullmatch(r"measuring: done in \d+\.\d s", lines[-1]), lines
    assert not ANSI.search(out.getvalue())


def test_a_short_step_prints_its_start_and_end_only():
    out = io.StringIO()
    with Ticker("exporting", interval=5.0, stream=out) as t:
        t.note("model.onnx")
    assert out.getvalue().splitlines()[:2] == ["exporting ...", "  model.onnx"]
    assert out.getvalue().splitlines()[2].startswith("exporting: done in ")


def test_a_note_restarts_the_silence_a_heartbeat_waits_for():
    out = io.StringIO()
    with Ticker("pass", interval=0.3, stream=out) as t:
        for group in "abcde":
            t.note(f"group {group}")
            time.sleep(0.1)
    assert "..." not in out.getvalue().split("\n", 1)[1]  # never 0.3 s without a line


def test_a_failed_step_says_no_done_line():
    out = io.StringIO()
    with pytest.raises(RuntimeError), Ticker("training", interval=0.1, stream=out):
        raise RuntimeError("stop")
    assert out.getvalue() == "training ...\n"


def test_without_a_stream_lines_go_to_a_non_terminal_stderr_whole_and_plain(capsys):
    with Ticker("baseline", interval=0.1) as t:
        t.note("scoring")
        time.sleep(0.35)
    err = capsys.readouterr().err
    assert err.startswith("baseline ...\n  scoring\n  ... ")
    assert err.splitlines()[2].endswith(" s elapsed: scoring")
    assert not ANSI.search(err)


def test_epochs_say_loss_elapsed_and_time_left():
    out = io.StringIO()
    with Ticker("teacher", interval=60.0, stream=out) as t:
        report = EpochReporter(t, epochs=2)
        for epoch in (1, 2):
            for batch in (1, 2):
                report.batch(batch, 2, loss=float(batch))
            report.epoch(epoch)
    lines = out.getvalue().splitlines()
    assert re.fullmatch(
        r"  epoch 1/2: loss 1\.5000, [\d.]+ s elapsed, about [\d.]+ s left", lines[1]
    )
    assert lines[2].startswith("  epoch 2/2: loss 1.5000, ") and lines[2].endswith(
        "about 0.0 s left"
    )


def test_the_heartbeat_of_a_running_epoch_names_batches_and_running_loss():
    out = io.StringIO()
    with Ticker("teacher", interval=0.1, stream=out) as t:
        EpochReporter(t, epochs=3).batch(4, 10, loss=0.5)
        time.sleep(0.25)
    beat = out.getvalue().splitlines()[1]
    assert re.fullmatch(
        r"  \.\.\. [\d.]+ s elapsed: epoch 1/3, batch 4/10, running loss 0\.5000, about .+ left",
        beat,
    )


def test_durations_read_as_seconds_minutes_and_hours():
    assert duration(8.24) == "8.2 s"
    assert duration(185) == "3 min 05 s"
    assert duration(3720) == "1 h 02 min"
    assert progress.HEARTBEAT_S == 10.0
