"""Imported only in the forkserver the step processes fork from (its `preload_modules`, set in
assets/executor.py): that server ignores SIGTERM.

`kill -TERM` to the process group of a `dagster asset materialize` run killed the forkserver
(Python's ignores only SIGINT), and Dagster then took every running step for crashed (exit code
255) and logged a retry, while the step went on. Each step sets its own handlers when it starts
(Dagster treats SIGTERM as its interrupt), so only the server keeps ignoring it.
"""

import signal

signal.signal(signal.SIGTERM, signal.SIG_IGN)
