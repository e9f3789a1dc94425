"""Shared helpers of the speed benches (pipeline_vs_model, pipeline_vs_naive, rerun,
memory, polygonize): model selection, synthetic clips, a warm Prefect server, timing,
tables and the machine line recorded with every figure.

Every bench defaults to the bundled `shapes-demo` model. While that checkpoint does not
exist, pass `--model PATH` (any segflow checkpoint) or `--stand-in`, which writes a
randomly initialised `maskrcnn_small` with the shapes classes (its detections are not
realistic: few survive the 0.6 confidence, so post-processing is under-represented).
"""

from __future__ import annotations

import argparse
import tempfile
import contextlib
import datetime as _dt
import importlib
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no network here

REPO = Path(__file__).resolve().parents[1]
BUNDLED = "shapes-demo"
BUNDLED_PATH = REPO / "segflow" / "assets" / f"{BUNDLED}.safetensors"
SHAPES = ("circle", "square", "ring", "triangle")


def tests_module(name: str):
    """The module `tests.<name>` of this checkout (the test models and clips a bench reuses).

    A bench run as `python bench/x.py` has bench/ on `sys.path` (its sibling helpers, such as
    this module, import by their plain names) and segflow as the installed package, but not
    the repo root where `tests` is a package: it is appended here, after every installed path.
    """
    if str(REPO) not in sys.path:
        sys.path.append(str(REPO))
    return importlib.import_module(f"tests.{name}")


# ---- model ---------------------------------------------------------------------------


def label_bench_parser(doc: str, seed: int = 3) -> argparse.ArgumentParser:
    """The options every label bench takes: --model/--stand-in, --seed (of the synthetic
    clip) and --workdir; the description is the first line of `doc`."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    add_model_args(ap)
    ap.add_argument("--seed", type=int, default=seed, help=f"seed of the synthetic clip (default {seed})")
    ap.add_argument("--workdir", default=None, help="keep clips and outputs here (default: a temporary folder)")
    return ap


def add_model_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--model", default=BUNDLED,
                    help="registered model name or checkpoint path (default: the bundled shapes-demo)")
    ap.add_argument("--stand-in", action="store_true",
                    help="use a random-init maskrcnn_small stand-in (only while shapes-demo is missing)")


def add_device_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda: where the flow and the baselines run")
    ap.add_argument("--size", default="480x640", help="clip size HxW (default 480x640; 720x1280 for the GPU figures)")


def clip_size(args: argparse.Namespace) -> tuple[int, int]:
    """`--size HxW` as (height, width)."""
    try:
        h, w = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        sys.exit(f"--size {args.size!r}: use HxW, e.g. 720x1280")
    return h, w


def sync(device) -> None:
    """Wait for the GPU's queued work, so a wall-clock reading includes it."""
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def stand_in_checkpoint(path: Path, seed: int = 0) -> Path:
    """A random-init `maskrcnn_small` with the shapes classes, saved like a real checkpoint."""
    import torch

    from segflow.models.arch import build_model
    from segflow.models.checkpoint import CheckpointMeta, save_checkpoint

    if not path.is_file():
        torch.manual_seed(seed)
        model = build_model("maskrcnn_small", len(SHAPES) + 1)
        save_checkpoint(path, model, CheckpointMeta("maskrcnn_small", SHAPES, {}))
    return path


def work_folder(args: argparse.Namespace) -> Path:
    """The bench's work folder: --workdir if given, else a fresh temporary folder."""
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="segflow-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    return work


def pick_model(args: argparse.Namespace, workdir: Path) -> str:
    """The `--model` value a bench runs with; refuses to silently swap in a stand-in.

    The bundled checkpoint is copied into the work folder first and used from there:
    while shapes-demo is still being trained its file is replaced now and then, and a
    bench must use one set of weights from start to end (a new digest would also make
    every cached raw output stale, turning a rerun into a first run).
    """
    import shutil

    if args.stand_in:
        return str(stand_in_checkpoint(Path(workdir) / "stand-in.safetensors"))
    if args.model == BUNDLED:
        if not BUNDLED_PATH.is_file():
            sys.exit(f"{BUNDLED} is not bundled yet ({BUNDLED_PATH} is missing): pass --model PATH "
                     "(a segflow checkpoint) or --stand-in (random weights)")
        pinned = Path(workdir) / "pinned" / BUNDLED_PATH.name  # keeps the name: model_id shapes-demo@<digest>
        pinned.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(BUNDLED_PATH, pinned)
        return str(pinned)
    return args.model


def model_label(spec: str) -> str:
    """The model as the label table names it (name@weights digest), for tables and RESULTS.md."""
    from segflow.models.registry import resolve_model

    try:
        return resolve_model(spec).model_id
    except Exception:  # noqa: BLE001 - a label only
        return Path(spec).name if Path(spec).suffix else spec


# ---- inputs ---------------------------------------------------------------------------


def make_clip(folder: Path, seed: int, frames: int, size: tuple[int, int] = (480, 640), name: str | None = None) -> Path:
    """A synthetic shapes clip (segflow.synth), written once and reused."""
    from segflow.synth import write_clip

    name = name or f"bench_s{seed}_{frames}f_{size[0]}x{size[1]}"
    path = Path(folder) / f"{name}.mp4"
    if not path.is_file():
        write_clip(folder, seed, frames, size, name)
    return path


def bench_inputs(args: argparse.Namespace) -> tuple[Path, str, tuple[int, int], Path, Path]:
    """What the flow benches start from (`--workdir`, `--model`, `--size`, `--seed`,
    `--frames`): (work folder, model spec, (height, width), clip, 4-frame warm-up clip)."""
    work = work_folder(args)
    model_spec = pick_model(args, work)
    size = clip_size(args)
    clip = make_clip(work / "clips", args.seed, args.frames, size)
    return work, model_spec, size, clip, make_clip(work / "clips", args.seed + 100, 4, size)


def decode_all(path: Path, batch_size: int) -> list:
    """Every frame of a clip, decoded up front, as the flow's FrameBatches."""
    from segflow.contracts import FrameRange
    from segflow.media import probe, read_batches

    info = probe(path)
    return list(read_batches(info, FrameRange(0, info.frame_count - 1), batch_size))


# ---- Prefect ---------------------------------------------------------------------------


@contextlib.contextmanager
def warm_prefect(timings: dict) -> Iterator[None]:
    """A temporary Prefect server (prefect_test_harness), warmed by one trivial flow.

    Records `server_start_s` (harness up) and `first_flow_s` (the trivial flow: client,
    engine and logging set-up) in `timings`, so benches report them apart from the runs.
    """
    from prefect import flow
    from prefect.testing.utilities import prefect_test_harness

    t0 = time.perf_counter()
    with prefect_test_harness(server_startup_timeout=120):
        timings["server_start_s"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        flow(lambda: None, name="bench-warm-up")()
        timings["first_flow_s"] = time.perf_counter() - t1
        yield


SETTLE_S = 1.5  # the most to wait
QUIET_CPU_S = 0.005  # CPU seconds the server may use in a quiet 0.2 s


def settle() -> None:
    """Let the temporary server record the last run before the next timed one starts.

    Its task run recorder writes each state event to SQLite as it arrives and keeps
    writing for a few hundred ms after a short flow ends; a flow run created meanwhile
    can meet "database is locked", a 503, and Prefect's client waits 2 s to retry. A
    user's next command (a new process) does not start inside that window, so
    back-to-back benchmark runs should not either. Waits until the server's processes
    (this one's children) use next to no CPU for 0.2 s, at least 0.3 s and at most
    `SETTLE_S` (all of it where psutil is missing, as on the lent GPU machines).
    """
    try:
        import psutil
    except ImportError:
        time.sleep(SETTLE_S)
        return
    deadline = time.monotonic() + SETTLE_S
    time.sleep(0.3)
    server = psutil.Process().children(recursive=True)
    before = _cpu_of(server)
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = _cpu_of(server)
        if now - before < QUIET_CPU_S:
            return
        before = now


def _cpu_of(processes) -> float:
    import psutil

    total = 0.0
    for p in processes:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def warm_label(warm_clip: Path, work: Path, **settings) -> float:
    """One label run of a short clip into a fresh folder (imports, model load, the GPU's
    model process, first task runs), so no timed run pays them; returns its seconds.
    Fresh each time: an output left by an earlier bench would be up to date, the model
    never loaded, and the first timed run would pay for it instead (stop 12, GPU)."""
    import shutil

    from segflow.cli import run_label

    out = work / "out-warm"
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    run_label([str(warm_clip)], str(out), **settings)
    return time.perf_counter() - t0


# ---- timing and output ----------------------------------------------------------------


def cpu_seconds() -> float:
    """User + system CPU time of this process so far (all its threads)."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def server_cpu_seconds() -> float | None:
    """User + system CPU time so far of this process's children (recursive): the temporary
    Prefect server `warm_prefect` starts (prefect_test_harness runs it as a subprocess).
    None where psutil is missing. Children that exited are not counted."""
    try:
        import psutil
    except ImportError:
        return None
    return _cpu_of(psutil.Process().children(recursive=True))


def interleaved(named: Sequence[tuple[str, Callable[[int], object]]], reps: int,
                cpu: dict[str, list[float]] | None = None) -> dict[str, list[float]]:
    """Run each callable `reps` times, alternating A B C, C B A, ...; wall seconds per call.

    Alternation spreads background load (this machine is shared) evenly over the
    compared things; the callable gets the repetition index. When `cpu` is given it
    receives this process's CPU seconds per call (all threads), a figure that the other
    tenants of the machine disturb much less than wall time.
    """
    times: dict[str, list[float]] = {name: [] for name, _ in named}
    for rep in range(reps):
        order = named if rep % 2 == 0 else list(reversed(named))  # ABBA: no fixed first place
        for name, fn in order:
            c0 = cpu_seconds()
            t0 = time.perf_counter()
            fn(rep)
            times[name].append(time.perf_counter() - t0)
            if cpu is not None:
                cpu.setdefault(name, []).append(cpu_seconds() - c0)
            print(f"  rep {rep + 1}/{reps} {name}: {times[name][-1]:.2f} s", file=sys.stderr, flush=True)
    return times


def in_thread(fn: Callable[[int], object]) -> Callable[[int], None]:
    """`fn(rep)` run in a fresh worker thread, as Prefect's ThreadPoolTaskRunner runs a
    task (torch's thread pool behaves differently there than in the main thread); its
    exception is raised again in the caller's thread."""
    import threading

    def run(rep: int) -> None:
        errors: list[BaseException] = []

        def target() -> None:
            try:
                fn(rep)
            except BaseException as exc:  # re-raised in the caller's thread
                errors.append(exc)

        worker = threading.Thread(target=target, name="bench-worker")
        worker.start()
        worker.join()
        if errors:
            raise errors[0]
    return run


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def machine() -> dict:
    """What the figures were measured on."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": gpu,
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A plain fixed-width table on stdout."""
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    print("  ".join(str(h).ljust(w) for h, w in zip(headers, widths)))
    print("  ".join("-" * w for w in widths))
    for r in cells:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 100 else f"{v:.1f}"
    return str(v)


def emit(result: dict) -> None:
    """The bench's last line: one JSON object."""
    sys.stdout.flush()
    print(json.dumps(result, sort_keys=False, default=str), flush=True)


def command_line() -> str:
    return "python " + " ".join([Path(sys.argv[0]).as_posix() if not sys.argv[0].startswith("bench") else sys.argv[0], *sys.argv[1:]])
