"""segflow's multi-object tracker on instance masks (pure numpy/scipy/pycocotools).

- `core`: `Tracker` (one frame at a time, state carried between frame ranges) and
  `assign_ids` (a whole table of detections).
- `state`: `TrackerConfig`, a `Track`, one frame's detections; JSON state.
- `matching`: the associations (motion-shifted mask IoU, re-identification).
- `motion`: displacement of a visible box, clamping predictions to the frame.
- `fragments`: shapes split in parts by an occluder.
- `depth`: which of two crossing objects is in front.
- `appearance`: each track's colour; a detection of another track's colour is not this one's.
- `ids`: the table's `object_id` strings; the short tracks it leaves out.
"""

from segflow.ops.tracker.core import Tracker, assign_ids
from segflow.ops.tracker.ids import merge_lengths, object_ids, short_tracks, track_lengths
from segflow.ops.tracker.motion import box_step, clamp_displacement
from segflow.ops.tracker.state import TRACKER_VERSION, TrackerConfig

__all__ = ["TRACKER_VERSION", "Tracker", "TrackerConfig", "assign_ids", "box_step", "clamp_displacement",
           "merge_lengths", "object_ids", "short_tracks", "track_lengths"]
