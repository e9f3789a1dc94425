"""Pure algorithms: numpy/torch in and out, no Prefect, no disk, no stage imports.

- `rle`: pycocotools' compressed RLE counts decoded/encoded/shifted without pixels.
- `nms`: mask IoU and greedy mask NMS on RLEs.
- `polygon`: mask -> polygons (contour tracing, simplification).
- `raster`: THE rasterizer, polygons -> mask, pixel (r, c) = square [c, c+1] x [r, r+1].
- `tracker/`: identities over frames (owned separately).
"""
