"""How much a thread issuing many tiny torch ops slows down beside a busy Python thread.

    python bench/gil_convoy.py [--ops 5000]

Every torch op called from Python releases the GIL and takes it back. Beside a thread
that keeps running Python, taking it back waits for that thread to be forced off the
GIL (the interpreter's switch interval, 5 ms by default). A CPU forward of a detector
issues few, long ops and hardly notices; a GPU forward issues thousands of
microsecond-long launches per batch and can stall. This is the lead for the label
flow reaching 0.37 of the bare GPU model (bench/RESULTS.md): its other stages run
Python in threads beside the segment stage. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time

from common import emit, machine, print_table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ops", type=int, default=5000)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    x = torch.zeros(16)

    def tiny_ops() -> float:
        t0 = time.perf_counter()
        for _ in range(args.ops):
            x.add_(1)
        return (time.perf_counter() - t0) / args.ops * 1e6

    alone = min(tiny_ops() for _ in range(3))
    rows, result = [["alone", "-", alone, 1.0]], {}
    default = sys.getswitchinterval()
    for interval in (0.005, 0.0005, 0.0001):
        sys.setswitchinterval(interval)
        stop = threading.Event()

        def busy() -> None:
            while not stop.is_set():
                sum(range(2000))

        worker = threading.Thread(target=busy)
        worker.start()
        try:
            beside = tiny_ops()
        finally:
            stop.set()
            worker.join()
        rows.append(["beside a busy Python thread", f"{interval * 1000:g} ms", beside, beside / alone])
        result[f"slowdown_switch_{interval * 1000:g}ms"] = round(beside / alone, 1)
    sys.setswitchinterval(default)
    mach = machine()
    print(f"# {mach['date']}  {mach['cpu']}  {mach['cores']} cores, torch {mach['torch']}  | python bench/gil_convoy.py")
    print_table(["tiny torch op (16 floats, add_)", "switch interval", "us per op", "x alone"], rows)
    emit({"bench": "gil_convoy", "ops": args.ops, "us_per_op_alone": round(alone, 2), **result, "date": mach["date"]})


if __name__ == "__main__":
    main()
