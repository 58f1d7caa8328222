"""Follow a tickcast feed and never miss a tick, with ``tickcast.client`` (docs/client.md).

Usage::

    python docs/examples/resume_client.py http://127.0.0.1:8000 [from_t]

Prints ``t`` and ``price_norm`` of every tick on stdout, connection events on stderr.
Server restarts, slow-consumer closes (4008) and a switch to another edge resume
without a gap or a duplicate; ticks lost for good (retention, a history reset) stop
it with the reason.
"""

from __future__ import annotations

import logging
import sys

from tickcast.client import Client, GapError


def main() -> int:
    url = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000"
    from_t = int(sys.argv[2]) if len(sys.argv) > 2 else None
    logging.basicConfig(format="# %(message)s")
    logging.getLogger("tickcast.client").setLevel(logging.INFO)  # show (re)connections

    client = Client(url, fields=["s"])
    try:
        for tick in client.stream(from_t=from_t):
            print(f"t={tick['t']} price_norm={tick['s']['price_norm']}", flush=True)
    except KeyboardInterrupt:
        return 0
    except GapError as exc:  # on_gap="continue" would log it and carry on instead
        print(f"# cannot resume: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
