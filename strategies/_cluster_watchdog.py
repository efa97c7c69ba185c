"""Watches a worker that waits for its cluster; run as a separate process by
`strategies` (MultiWorkerMirroredStrategy's constructor holds the GIL while it
waits, so no thread of the waiting process can run).

    python _cluster_watchdog.py PARENT_PID TIMEOUT_S INTERVAL_S OPTION HOST:PORT...

Every INTERVAL_S it prints which of the other workers do not answer yet; after
TIMEOUT_S it prints one error line naming them and kills the waiting process.
It exits as soon as its stdin closes: the parent joined its cluster, or died.
Pure standard library: it must start in milliseconds, without TensorFlow.
"""

import os
import select
import signal
import socket
import sys
import time


def answers(host):
    name, _, port = host.rpartition(":")
    try:
        socket.create_connection((name, int(port)), timeout=1).close()
        return True
    except OSError:
        return False


def main(parent, timeout, interval, option, *hosts):
    parent, timeout, interval = int(parent), float(timeout), float(interval)
    start = time.monotonic()
    while True:
        left = timeout - (time.monotonic() - start)
        if select.select([sys.stdin], [], [], max(0.0, min(interval, left)))[0]:
            return 0  # End of input: the parent joined, or is gone.
        waited = time.monotonic() - start
        silent = ", ".join(h for h in hosts if not answers(h)) or "workers that answer but have not joined"
        if waited >= timeout:
            print(
                f"error: {silent} did not join the cluster within {option}={timeout:g}; start "
                "every worker with the same worker_hosts (or TF_CONFIG), each with its own "
                "task_index",
                file=sys.stderr,
                flush=True,
            )
            os.kill(parent, signal.SIGKILL)  # It cannot run a handler while it waits.
            return 1
        print(f"Waiting for {silent} to join the cluster ({waited:.0f} s of {timeout:g} s).", flush=True)


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
