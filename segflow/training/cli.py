"""Click commands for training (``segflow train``) and scoring a checkpoint.

The main CLI registers :data:`train` and :data:`evaluate` (aliases of the ``*_cmd`` objects);
``python -m segflow.training.cli train ...`` works on its own too.
Settings are checked by the flow and refused with a one-line :class:`SegflowError`.
"""

from __future__ import annotations

import json
import shlex
import sys

import click

from segflow.errors import SegflowError
from segflow.settings import default_of
from segflow.training import DEFAULT_ARCH, DEFAULT_BATCH_SIZE, DEFAULT_LR, DEFAULT_STEPS


@click.command("train")
@click.option("--data", "data", multiple=True, required=True, metavar="PATH",
              help="COCO JSON file, folder of *.coco.json, or segflow Parquet table (repeatable).")
@click.option("--out", required=True, metavar="PATH", help="Checkpoint to write (.safetensors/.pt) or a folder.")
@click.option("--arch", default=DEFAULT_ARCH, show_default=True, help="maskrcnn_small, maskrcnn_r50_fpn or maskrcnn_r50_fpn_v2.")
@click.option("--steps", default=DEFAULT_STEPS, show_default=True, type=int, help="Optimizer steps.")
@click.option("--batch-size", default=DEFAULT_BATCH_SIZE, show_default=True, type=int, help="Frames per step.")
@click.option("--lr", default=DEFAULT_LR, show_default=True, type=float, help="Peak learning rate (AdamW).")
@click.option("--device", default=default_of("device"), show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed for init, data order and augmentation.")
@click.option("--init", default=None, metavar="CKPT", help="Start from this segflow checkpoint (fine-tuning).")
@click.option("--frame-stride", default=1, show_default=True, type=int, help="Use every n-th frame of each video.")
@click.option("--crop", default=None, metavar="HxW", help="Train on random HxW crops at inference scale (faster on CPU).")
@click.option("--checkpoint-every", default=0, show_default=True, type=int,
              help="Also save <out>.stepNNNNNN checkpoints every N steps (0: only the final one).")
@click.option("--threads", default=0, type=int, help="torch CPU threads (0: torch's default).")
def train_cmd(data: tuple[str, ...], out: str, arch: str, steps: int, batch_size: int, lr: float, device: str,
              seed: int, init: str | None, frame_stride: int, crop: str | None, checkpoint_every: int,
              threads: int) -> None:
    """Train a Mask R-CNN on labeled frames and write a segflow checkpoint."""
    import torch

    from segflow.flows.train import checkpoint_path, parse_crop, split_data, train_flow, validate
    from segflow.models.checkpoint import read_meta
    from segflow.storage.layout import check_folder_writable

    # Validate before Prefect starts anything, so a bad flag costs nothing.
    validate(arch, steps, batch_size, lr, device, seed, checkpoint_every)
    if frame_stride < 1:
        raise SegflowError(f"--frame-stride {frame_stride}: must be an integer >= 1")
    crop_hw = parse_crop(crop)
    split_data(list(data))  # missing paths / folders without *.coco.json
    if init is not None:
        try:
            read_meta(init)  # a missing or unreadable --init checkpoint
        except SegflowError as exc:
            raise SegflowError(f"--init {init}: {exc}") from None
    if threads < 0:
        raise SegflowError(f"--threads {threads}: must be >= 0")
    check_folder_writable(checkpoint_path(out).resolve().parent, f"--out {out}")
    if threads:
        torch.set_num_threads(threads)
    # Recorded in the checkpoint's training record so the model can be reproduced.
    command = shlex.join(["segflow" if sys.argv[0].endswith("segflow") else sys.argv[0], *sys.argv[1:]])
    digest = train_flow(data=list(data), out=out, arch=arch, steps=steps, batch_size=batch_size, lr=lr,
                        device=device, seed=seed, init=init, frame_stride=frame_stride,
                        crop=list(crop_hw) if crop_hw else None, checkpoint_every=checkpoint_every, command=command)
    click.echo(f"wrote {out} sha256={digest}")


@click.command("evaluate")
@click.argument("model")
@click.argument("coco_json")
@click.option("--device", default="cpu", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--out", default=None, metavar="PATH", help="Also write the metrics JSON here.")
def evaluate_cmd(model: str, coco_json: str, device: str, out: str | None) -> None:
    """Score MODEL (a checkpoint path, or shapes-demo) on COCO ground truth COCO_JSON.

    Prints segm/bbox AP, AP50, AP75 (pycocotools COCOeval) as JSON.
    """
    from pathlib import Path

    from segflow.training.evaluate import evaluate_checkpoint
    from segflow.models.devices import resolve_device

    path = Path(model)
    if not path.is_file() and model == "shapes-demo":
        path = Path(__file__).resolve().parents[1] / "assets" / "shapes-demo.safetensors"
    if not path.is_file():
        raise SegflowError(f"MODEL {model}: no such checkpoint file (give a .safetensors/.pt path or shapes-demo)")
    metrics = evaluate_checkpoint(path, coco_json, device=str(resolve_device(device)))
    text = json.dumps(metrics, indent=1)
    if out:
        Path(out).write_text(text + "\n")
    click.echo(text)


# Names the main CLI looks up (segflow.cli.LAZY_COMMANDS).
train = train_cmd
evaluate = evaluate_cmd


@click.group()
def cli() -> None:
    """segflow training commands (standalone entry point)."""


cli.add_command(train_cmd)
cli.add_command(evaluate_cmd)


def main() -> None:
    """Standalone entry: SegflowError becomes one line on stderr and exit status 2."""
    try:
        cli.main(standalone_mode=False)
    except SegflowError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        sys.exit(1)


if __name__ == "__main__":
    main()
