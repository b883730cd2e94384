"""Locust's own CSV writer under the suite: closing its files at exit stops the greenlet that rewrites them, so it
cannot wake once more on closed files and print a traceback under the summary."""

import locust  # noqa: F401 - gevent first
from locust.env import Environment
from locust.stats import PERCENTILES_TO_REPORT, StatsCSVFileWriter

import gevent

from rlsuite.csvfiles import stop_locust_csv_writer_before_close


def test_closing_locusts_csv_files_stops_their_writer_first(tmp_path):
    stop_locust_csv_writer_before_close()
    stop_locust_csv_writer_before_close()  # idempotent: a second init (web UI runs) wraps nothing twice
    writer = StatsCSVFileWriter(Environment(), PERCENTILES_TO_REPORT, str(tmp_path / "out"))
    greenlet = gevent.spawn(writer.stats_writer)
    gevent.sleep(0)  # it writes its headers and the first rows, then waits for its next second
    assert (tmp_path / "out_stats.csv").read_text().startswith("Type,Name")
    writer.close_files()
    assert greenlet.dead and greenlet.exception is None  # stopped, not failed on a closed file
    assert writer.requests_csv_filehandle.closed
