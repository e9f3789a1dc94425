"""Digests of the label tables of the bench clips and the test clips (behaviour checks).

    python bench/digests.py [--workdir DIR] [--frames 48] > digests.txt

Labels, in one process, each case below into a fresh folder and prints one line per case:
`<case> rows=<n> sha256=<digest>`. A digest covers every row of the table (every column,
`source` reduced to its file name so the work folder does not matter), rows sorted, so two
runs of different code agree exactly when they wrote the same table. Reruns copy the first
run's folder and change one setting (the cached stages are then exercised, as users rerun).

Cases: the bench clip (segflow.synth, seed 3, `--frames` frames, 16-frame ranges) with the
bundled shapes-demo, then reruns with confidence 0.7, coarseness 0.01, iou_threshold 0.5,
tracking off; the same frames as a JPEG folder (first run + confidence rerun); the test
clip of tests/clips.py with the test model (5-frame ranges, as tests/conftest.py) and with
shapes-demo; the test clip plus three test images in one run (a video and an image group).
Compare two outputs with `diff`.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from common import label_bench_parser, make_clip, pick_model, tests_module, warm_prefect, work_folder
from images import write_frames


def table_digest(out: Path) -> tuple[int, str]:
    """(rows, sha256) of the label table under `out`: rows sorted, `source` as a file name."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = sorted(p for p in out.rglob("*.parquet") if ".segflow" not in p.parts)
    if not files:
        return 0, "-"
    table = pa.concat_tables([pq.read_table(p) for p in files])
    rows = table.to_pylist()
    for r in rows:
        r["source"] = Path(r["source"]).name
    lines = sorted(repr(sorted(r.items())) for r in rows)
    return len(rows), hashlib.sha256("\n".join(lines).encode()).hexdigest()


def main() -> None:
    ap = label_bench_parser(__doc__)
    ap.add_argument("--frames", type=int, default=48, help="frames of the bench clip (default 48)")
    args = ap.parse_args()

    from PIL import Image

    from segflow.cli import run_label

    tests_module("color_model")  # registers "test-color"
    clips = tests_module("clips")
    work = work_folder(args)
    model = pick_model(args, work)
    clip = make_clip(work / "clips", args.seed, args.frames)
    jpegs = work / "jpegs"
    write_frames(make_clip(work / "clips", args.seed, 16), jpegs)
    test_clip = clips.write_mp4(work / "clips" / "shapes.mp4", clips.render(n_frames=12))
    stills = work / "stills"
    stills.mkdir(exist_ok=True)
    for i, frame in enumerate(clips.render(n_frames=3, seed=5)):
        Image.fromarray(frame).save(stills / f"still{i}.png")

    def case(name: str, inputs: list[Path], copy_of: str | None = None, **settings) -> None:
        out = work / "out" / name
        shutil.rmtree(out, ignore_errors=True)
        if copy_of:
            shutil.copytree(work / "out" / copy_of, out)
        run_label([str(p) for p in inputs], str(out), **settings)
        rows, digest = table_digest(out)
        print(f"{name} rows={rows} sha256={digest}", flush=True)

    bench = dict(model=model, device="cpu", frames_per_range=16)
    with warm_prefect({}):
        case("bench-clip", [clip], **bench)
        for name, change in [("confidence", {"confidence": 0.7}), ("coarseness", {"coarseness": 0.01}),
                             ("iou", {"iou_threshold": 0.5}), ("tracking-off", {"tracking": False})]:
            case(f"bench-clip-rerun-{name}", [clip], copy_of="bench-clip", **bench, **change)
        case("bench-images", [jpegs], model=model, device="cpu")
        case("bench-images-rerun-confidence", [jpegs], copy_of="bench-images", model=model, device="cpu",
             confidence=0.7)
        case("test-clip-color", [test_clip], model="test-color", frames_per_range=5)
        case("test-clip-color-rerun-coarseness", [test_clip], copy_of="test-clip-color", model="test-color",
             frames_per_range=5, coarseness=0.02)
        case("test-clip-shapes-demo", [test_clip], model=model, device="cpu", frames_per_range=5)
        case("test-clip-and-stills", [test_clip, stills], model="test-color", frames_per_range=5)


if __name__ == "__main__":
    main()
