"""Stand-in for mpd-client in watcher tests: same command line and exit-code contract, trivial work.

Copies the input to the output (through its own temporary name, like the real client), slowly if asked.
Input starting with b"CORRUPT" exits 65; an unreachable --server exits 69; $FAKE_CLIENT_EXIT forces a code
(not for --check-options, which accepts every option as mpd-watch's start check asks).
Each run appends a line to $FAKE_CLIENT_LOG so tests can count runs, and its start and end time to
$FAKE_CLIENT_TIMES (successful runs) so they can see how many ran at once.
"""

import os
import socket
import sys
import time
from pathlib import Path


def main() -> int:
    args = sys.argv[1:]
    if "--check-options" in args:  # as mpd-client: its options are accepted, nothing is done
        return 0
    source = Path(args[args.index("-i") + 1])
    output = Path(args[args.index("-o") + 1])
    log = os.environ.get("FAKE_CLIENT_LOG")
    if log:
        with open(log, "a") as handle:
            handle.write(f"{os.getpid()} {source.name} {output} {' '.join(args)}\n")
    forced = os.environ.get("FAKE_CLIENT_EXIT")
    if forced:
        print(f"fake client: forced exit {forced}", file=sys.stderr)
        return int(forced)
    if "--server" in args:
        host, _, port = args[args.index("--server") + 1].rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=2).close()
        except OSError as exc:
            print(f"mpd-client: daemon at {host}:{port} unavailable: {exc}", file=sys.stderr)
            return 69
    data = source.read_bytes()
    if data.startswith(b"CORRUPT"):
        print(f"mpd-client: {source.name}: invalid data found when processing input", file=sys.stderr)
        return 65
    seconds = float(os.environ.get("FAKE_CLIENT_SECONDS", "0"))
    times, started = os.environ.get("FAKE_CLIENT_TIMES"), time.time()
    temp = output.with_name(f".{output.name}.client.tmp")
    chunks = 10
    with open(temp, "wb") as handle:
        for i in range(chunks):
            handle.write(data[i * len(data) // chunks:(i + 1) * len(data) // chunks])
            handle.flush()
            if "--progress" in args:
                print(f"in {i + 1} | out {2 * (i + 1)}/{2 * chunks} | 1.00 fps | 0:00:0{i % 10}", file=sys.stderr,
                      flush=True)
            time.sleep(seconds / chunks)
        handle.write(b"|processed")
    os.rename(temp, output)
    print(f"fake client: wrote {output.name}", file=sys.stderr)
    if times:
        with open(times, "a") as handle:
            handle.write(f"{started} {time.time()}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
