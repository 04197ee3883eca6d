"""Run one command and write its wall time and rusage as JSON.

Usage: measure.py RESULT_JSON TIMEOUT_S COMMAND...

A separate, small launcher because a child's ru_maxrss starts at the RSS of
the process that forked it: run.py holds pyvips and would inflate every peak.
"""

import json
import os
import signal
import sys
import time


def main(argv: list[str]) -> None:
    result_path, timeout, *command = argv
    start = time.perf_counter()
    pid = os.posix_spawnp(command[0], command, os.environ)
    signal.signal(signal.SIGALRM, lambda *_: os.kill(pid, signal.SIGKILL))
    signal.alarm(max(1, round(float(timeout))))
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - start
    signal.alarm(0)
    result = {
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_bytes": usage.ru_maxrss * 1024,
        "exit_code": os.waitstatus_to_exitcode(status),
    }
    with open(result_path, "w") as stream:
        json.dump(result, stream)


if __name__ == "__main__":
    main(sys.argv[1:])
