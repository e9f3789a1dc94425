"""Training segflow's Mask R-CNN models.

* :mod:`segflow.training.data`: datasets from COCO JSON (videos or images) and from
  segflow's own Parquet labels.
* :mod:`segflow.training.loop`: the plain training loop (``train``).
* :mod:`segflow.training.evaluate`: COCO segm/bbox AP of a checkpoint.
* :mod:`segflow.training.cli`: the ``segflow train`` / ``segflow evaluate`` commands,
  which run the Prefect flow in :mod:`segflow.flows.train`.

Nothing is imported here so ``import segflow.training`` stays cheap. The training
defaults are here, once, for the flow's parameters and the CLI's options.
"""

DEFAULT_ARCH = "maskrcnn_small"
DEFAULT_STEPS = 3000
DEFAULT_BATCH_SIZE = 4
DEFAULT_LR = 2e-3
