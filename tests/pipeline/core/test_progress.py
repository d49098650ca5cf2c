import re

from pipeline.core.progress import Progress


def test_lines_carry_done_total_rate_elapsed_and_eta():
    lines: list[str] = []
    progress = Progress("verified", 4, lines.append, unit="answers", every_s=3600)
    progress.update(1)
    progress.update(2)  # within every_s of the first line: not written
    progress.update(4, extra="2 cached")
    assert len(lines) == 2
    assert re.fullmatch(r"verified: 1/4 answers \(25%\), [\d.]+ answers/s, elapsed 0:\d\d, ETA (0:\d\d|\?)", lines[0])
    assert lines[1].startswith("verified: 4/4 answers (100%)")
    assert lines[1].endswith("ETA 0:00, 2 cached")


def test_advance_counts_increments_and_empty_work_is_complete():
    lines: list[str] = []
    progress = Progress("scored", 0, lines.append, every_s=0)
    progress.advance(0)
    assert len(lines) == 1 and "0/0 items (100%)" in lines[0]
    counted = Progress("scored", 3, lines.append, every_s=0)
    counted.advance()
    counted.advance(2)
    assert counted.done == 3


def test_resumed_work_counts_as_done_but_not_in_the_rate():
    lines: list[str] = []
    progress = Progress("verifying", 10, lines.append, unit="answers", every_s=0)
    progress.resume(6)
    assert lines[-1].startswith("verifying: 6/10 answers (60%), 0.0 answers/s")
    assert "ETA ?" in lines[-1] and lines[-1].endswith("6 resumed")
    progress.update(8)
    assert progress.done == 8 and progress.resumed == 6 and "ETA ?" not in lines[-1]
