"""segflow: automated instance-segmentation labeling as Prefect flows."""

__version__ = "0.1.0"
