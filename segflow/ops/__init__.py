"""Pure algorithms: numpy/torch in and out, no Prefect, no disk, no stage imports.

- `rle`: pycocotools' compressed RLE counts decoded/encoded/shifted without pixels.
- `nms`: mask IoU and greedy mask NMS on RLEs.
- `outline`: a mask's crop and its exact pixel-edge outline (contour tracing).
- `polygon`: outlines simplified (RDP within an IoU of the mask), batched over detections.
- `raster`: THE rasterizer, polygons -> mask, pixel (r, c) = square [c, c+1] x [r, r+1].
- `vote`: one class per object (score-weighted vote over its track).
- `tracker/`: identities over frames (owned separately).
"""
