"""Are the boxes of a label table the tight boxes of what it draws? One JSON line.

    python bench/boxes.py LABELS                  # a label run's --out folder
    python bench/boxes.py LABELS --coco coco.json # also its COCO export, read by pycocotools

For every row: the largest distance (px) between x0, y0, x1, y1 and the bounds of its
geometry, and between those bounds and the box of the pixels `segflow.ops.raster`
draws for it (pixel (r, c) in when its centre is); how many exceed 0.5 and 1 px, and how
many geometries reach past the frame. With --coco: each annotation's bbox against
pycocotools' box of its own segmentation (`annToMask`, which snaps polygon vertices to
1/5 px, so up to about 1 px apart on its own).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json

import numpy as np
import pandas as pd
import shapely

from segflow.ops.raster import pixel_boxes


def table_boxes(labels: str) -> dict:
    df = pd.read_parquet(labels)
    geoms = shapely.from_wkb(df["geometry"].to_numpy())
    bounds = shapely.bounds(geoms)
    box = df[["x0", "y0", "x1", "y1"]].to_numpy(np.float64)
    pix = np.zeros((len(df), 4))
    for (h, w), ii in df.groupby(["height", "width"]).indices.items():
        pix[ii] = pixel_boxes(geoms[ii], (int(h), int(w)))
    d_box, d_pix = np.abs(box - bounds).max(axis=1), np.abs(bounds - pix).max(axis=1)
    outside = (bounds[:, 0] < 0) | (bounds[:, 1] < 0) | (bounds[:, 2] > df["width"]) | (bounds[:, 3] > df["height"])
    return {"rows": len(df), "box_vs_geometry_max_px": round(float(d_box.max(initial=0)), 4),
            "geometry_vs_pixels_max_px": round(float(d_pix.max(initial=0)), 4),
            "geometry_vs_pixels_over_0.5px": int((d_pix > 0.5).sum()), "geometry_vs_pixels_over_1px": int((d_pix > 1).sum()),
            "geometry_past_frame": int(outside.sum())}


def coco_boxes(path: str) -> dict:
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(path)
    worst, over = 0.0, 0
    for ann in coco.loadAnns(coco.getAnnIds()):
        ys, xs = np.nonzero(coco.annToMask(ann))
        if not len(xs):
            continue
        x, y, w, h = ann["bbox"]
        d = max(abs(xs.min() - x), abs(ys.min() - y), abs(xs.max() + 1 - (x + w)), abs(ys.max() + 1 - (y + h)))
        worst, over = max(worst, float(d)), over + int(d > 1.5)
    return {"coco_bbox_vs_pycocotools_mask_max_px": round(worst, 4), "coco_over_1.5px": over}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("labels")
    ap.add_argument("--coco")
    args = ap.parse_args()
    print(json.dumps(table_boxes(args.labels) | (coco_boxes(args.coco) if args.coco else {})))


if __name__ == "__main__":
    main()
