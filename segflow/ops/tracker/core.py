"""The tracker: give every kept instance an identity that survives a whole video.

Each frame, ByteTrack-style but on masks:

1. kept (high-score) detections against every live track, lost ones included. The
   similarity is the mask IoU between the detection and the track's last mask
   *translated by the motion model's predicted displacement* (constant velocity of
   the visible box, exponentially smoothed, robust to edges being covered, clamped so
   the prediction stays in the frame); same class only; optimal assignment
   (Hungarian) above `match_iou`. The translation is done on the RLE itself.
   Classes: a track's class is the majority class of its detections; a detection
   of another class scores its IoU minus `class_penalty`, so a model's one-frame
   class flip on the same mask continues the track (the row keeps the class the
   model gave it) while a different object of another class never takes over.
   `class_penalty >= 1` makes tracks strictly single-class.
2. tracks still unmatched against the low-score detections (between
   `low_score` and the confidence, surviving NMS) the same way: a match keeps the
   track and its motion alive through a weak frame, but writes no row. Then tracks
   lost for at most `WEAK_REID_GAP` frames against the weak detections left, by
   distance as in re-identification (step 3), same class only: a small fast object
   that turned (a bounce) no longer overlaps its prediction at all, and a weak
   detection where it turned keeps it and measures its new course.
3. re-identification: tracks still unmatched against kept detections still
   unmatched, by distance from the predicted centre (or from where the track was last
   seen, whichever is nearer), gated by both objects' sizes plus a margin that grows
   with the time lost; same class, unless the class penalty is small (< 0.1, as after
   class-agnostic NMS), when another class only costs part of the gate (an object the
   model missed for a while often comes back under another name); a detection much
   bigger than the object is refused.
   This bridges long occlusions and objects that leave the frame and come back (the
   prediction is clamped to the frame, so a track that left waits where it left).
   A track seen on at most three frames can lose its detection here to a lost track of
   the detection's class (an object coming back that the model first called another
   class started a track of its own, too short to stay in the label table; a shape
   the model saw over two objects as a third class did too).
   A fragment (below) is re-identified like any track: a new object born touching
   another (two objects that start on top of each other) moves off at a speed its one
   frame could not measure.

   The gate also allows for partly visible boxes: a track last seen as a sliver (going
   behind something) or a detection that is one (coming out) has its box centre up to
   half the missing size away from the object's.
4. two objects seen as one shape (a detection that covers most of two tracks'
   predictions, clearly bigger than the matched one's own): the row gets the front
   object's id (the order seen while both were visible, see `depth`, else the one whose
   prediction lies more inside the shape) and both tracks keep their predicted course
   (`_coast`) instead of taking the merged shape's motion; the one behind is
   re-identified when it comes out.

Appearance (`appearance`), when the detections carry their mean colour: each track keeps
the colour of its own detections; a detection far from a track's colour and close to
another nearby same-class track's of clearly different colour is refused to it in steps
1-3, re-identification prefers the candidate of the right colour, and in step 4 the
shape's id goes to the track whose colour it mostly shows. Without colours, or with
objects of one colour, none of this changes anything.

Motion is carried through occlusions: the velocity is the smoothed move of the visible
box, where a box that changed size moves with the edge whose move is nearest the
predicted one (`motion.box_step`), so an object sliding behind a moving occluder
keeps its speed instead of taking the occluder's edge's; a lost track moves on at
that velocity (clamped to the frame).

What is left starts a new track. A track unmatched for more than `track_buffer`
frames is forgotten, unless it was last seen at the edge of the frame: an object that
left waits `exit_buffer` frames (300), matched then only by re-identification with a
detection coming in at the edge (`match_reid`), so it keeps its id however long it
stays out within that.

Short tracks: ids are final when a frame is done (nothing is merged or renumbered
after the fact, which keeps range files independent of later frames); a model's blink
(a few frames of another class beside the object's own detection, a spurious
detection) gets a track of its own, which the label table leaves out when it is
shorter than the minimum track length (`ids.short_tracks`, applied by the persist
stage over the whole input).

Split shapes: see `segflow.ops.tracker.fragments`.

Everything is pure numpy/scipy/pycocotools and deterministic: the same detections in
the same frame order give the same ids, however the frames are cut into ranges, which
is what makes an interrupted and resumed run write the same ids as a straight one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from segflow.ops.rle import shift_rle
from segflow.ops.tracker.appearance import (
    color_distances, front_by_color, looks_like_another, observe_color, track_colors,
)
from segflow.ops.tracker.depth import forget, observe_depth
from segflow.ops.tracker.fragments import merged_fragments, parent_of, release_fragments
from segflow.ops.tracker.matching import covering_others, match_iou, match_reid
from segflow.ops.tracker.motion import at_border, box_step_xy, clamped_xy, extent
from segflow.ops.tracker.state import FrameDetections, Track, TrackerConfig


YOUNG = 3  # a track seen on at most this many frames may lose its detection to re-identification
WEAK_REID_GAP = 2  # a track lost for at most this many frames may be re-identified on a weak detection


@dataclass
class Tracker:
    """Online mask tracker; feed frames in increasing order with `update`.

    The whole state is plain data, so a tracker carried from one frame range to the
    next continues its tracks across the boundary.
    """

    config: TrackerConfig = field(default_factory=TrackerConfig)
    next_id: int = 1
    tracks: list[Track] = field(default_factory=list)

    def update(
        self,
        frame: int,
        labels: np.ndarray,
        rles: list[dict],
        low_labels: np.ndarray | None = None,
        low_rles: list[dict] | None = None,
        colors: np.ndarray | None = None,
        low_colors: np.ndarray | None = None,
    ) -> np.ndarray:
        """Track ids for the kept instances of one frame.

        Args:
            frame: the frame number (increasing from call to call).
            labels: ``(N,)`` int class ids of the kept instances.
            rles: their N COCO RLE masks.
            low_labels: ``(M,)`` class ids of this frame's lower-score detections:
                they can keep a track alive but never get an id or start a track.
            low_rles: their M masks.
            colors: ``(N, 3)`` mean colour under each kept mask (`segflow.ops.appearance`;
                NaN rows: unknown), or None: matching by motion, size and class only.
            low_colors: ``(M, 3)`` the same for the lower-score detections.

        Returns:
            ``(N,)`` int64 track ids (>= 1), in input order.
        """
        cfg = self.config
        high = FrameDetections.of(labels, rles, colors)
        low = FrameDetections.of(low_labels, low_rles, low_colors)
        self.tracks = [t for t in self.tracks if self._alive(t, frame)]
        tracks = self.tracks
        ids = np.zeros(len(high.rles), np.int64)
        shifted, predicted = self._predict(tracks, frame)
        parents = self._parent_index(tracks)
        every = range(len(tracks))
        # tracks waiting only because they left the frame take part in re-identification only
        active = [i for i in every if frame - tracks[i].last_frame <= cfg.track_buffer + 1]

        # A detection that looks like another nearby track of clearly another colour is not this one's.
        colors = track_colors(tracks)
        dist_h = color_distances(colors, high)
        veto_h = looks_like_another(tracks, colors, predicted, high, frame, cfg, dist_h)
        if dist_h is not None and cfg.color_separation > 0:
            # Another class and another colour: another object (a false detection on an
            # occluder or the background does not take a track over).
            other = np.array([t.label for t in tracks])[:, None] != high.labels[None, :]
            off = other & np.isfinite(dist_h) & (dist_h > 2.0 * cfg.color_separation)
            veto_h = off if veto_h is None else veto_h | off
        dist_l = color_distances(colors, low)
        veto_l = looks_like_another(tracks, colors, predicted, low, frame, cfg, dist_l)
        if dist_l is not None and cfg.color_separation > 0:
            # A weak detection only keeps a track alive when it has the track's colour: one
            # of another colour is something else (an occluder, the background).
            off = np.isfinite(dist_l) & (dist_l > cfg.color_separation)
            veto_l = off if veto_l is None else veto_l | off

        # 1. kept detections against every live track, on motion-shifted mask IoU.
        pairs = match_iou(tracks, shifted, active, high, range(len(high.rles)), cfg, parents, veto_h)
        done_t = {t for t, _ in pairs}
        done_d = {d for _, d in pairs}
        updates = [(t, high, d) for t, d in pairs]

        # 2. what is left, against the low-score detections (keeps tracks alive, no row).
        left_t = [i for i in active if i not in done_t]
        pairs = match_iou(tracks, shifted, left_t, low, range(len(low.rles)), cfg, parents, veto_l)
        done_t |= {t for t, _ in pairs}
        updates += [(t, low, d) for t, d in pairs]
        if cfg.reid_gate > 0 and len(low.rles):
            # a small fast object that turned no longer overlaps its prediction: a weak
            # detection of its class near it (re-identification's gate) keeps it
            taken = {d for t, ds, d in updates if ds is low}
            left_t = [i for i in active if i not in done_t and frame - tracks[i].last_frame <= WEAK_REID_GAP]
            left_d = [d for d in range(len(low.rles)) if d not in taken]
            pairs = match_reid(tracks, predicted, left_t, low, left_d, frame, cfg.reid_gate, 1.0,
                               color=None if dist_l is None else (dist_l, veto_l, cfg.color_tolerance,
                                                                  cfg.color_separation))
            done_t |= {t for t, _ in pairs}
            updates += [(t, low, d) for t, d in pairs]

        # 3. re-identify tracks from their predicted centre.
        if cfg.reid_gate > 0:
            # A track seen on at most YOUNG frames can lose its detection to a lost track of
            # that detection's class: an object coming back that the model first called
            # another class (per-class NMS keeps such duplicates) started a new track.
            young = {d: t for t, ds, d in updates if ds is high and tracks[t].hits <= YOUNG}
            left_t = [i for i in every if i not in done_t]
            left_d = [d for d in range(len(high.rles)) if d not in done_d or d in young]
            pairs = match_reid(tracks, predicted, left_t, high, left_d, frame, cfg.reid_gate, cfg.class_penalty,
                               cfg.track_buffer, claimed=set(young), min_hits=YOUNG + 1,
                               color=None if dist_h is None else (dist_h, veto_h, cfg.color_tolerance,
                                                                  cfg.color_separation))
            taken = {d for _, d in pairs if d in young}
            updates = [u for u in updates if not (u[1] is high and u[2] in taken)]
            done_t -= {young[d] for d in taken}
            done_t |= {t for t, _ in pairs}
            done_d |= {d for _, d in pairs}
            updates += [(t, high, d) for t, d in pairs]

        merged = merged_fragments(shifted, parents, done_t, updates)
        # Two objects seen as one shape: the row is the front one's, both keep their course.
        coast = {}
        # The one in front is whole: more of its prediction is inside the shape, unless
        # the order was seen while both were visible.
        partners = {tr.merged for tr in tracks}
        in_blob = {i for i, tr in enumerate(tracks) if tr.merged or tr.track_id in partners}
        # a track of the shape's class kept alive only by a weak detection inside it is the one
        # hidden behind (of another class, the weak one is more often the model's duplicate)
        weak = {t for t, ds, _ in updates if ds is low} - {t for t, ds, _ in updates if ds is high}
        labels = np.array([tr.label for tr in tracks], np.int64)
        for t, d, o, cover_t, cover_o in covering_others(shifted, parents, done_t, updates, high, in_blob,
                                                           weak=weak, labels=labels):
            seen = front_by_color(tracks[t], tracks[o], high, d, cfg.color_separation)
            if seen is not None:  # the shape's colour is mostly one object's: the one in front
                front = t if seen is tracks[t] else o
            elif tracks[o].merged == tracks[t].track_id or tracks[t].merged == tracks[o].track_id:
                front = o if tracks[o].merged == tracks[t].track_id else t  # the one that had the row
            elif tracks[t].track_id in tracks[o].front_of or tracks[o].track_id in tracks[t].front_of:
                front = o if tracks[t].track_id in tracks[o].front_of else t
            else:
                front = o if cover_o > cover_t + 0.05 else t
            tracks[front].merged = tracks[o if front == t else t].track_id
            coast[d] = front
            updates = [(front if (u, ds, e) == (t, high, d) else u, ds, e) for u, ds, e in updates]
        observe_depth(tracks, shifted, [(t, d) for t, ds, d in updates if ds is high and d not in coast], high)
        for t, dets, d in updates:
            if dets is high and d in coast:
                self._coast(tracks[t], shifted[t], frame, int(dets.labels[d]))
            else:
                self._absorb(tracks[t], dets, d, frame)
            if dets is high:
                ids[d] = tracks[t].track_id
        matched_high = [(tracks[t], d) for t, dets, d in updates if dets is high]
        for d in range(len(high.rles)):
            if d not in done_d:
                ids[d] = self._start(high, d, frame, parent_of(high, d, matched_high))
        self.tracks = [t for i, t in enumerate(self.tracks) if i not in merged]
        release_fragments(self.tracks, frame)
        forget(self.tracks)
        return ids

    def cut(self) -> None:
        """A shot cut: every track ends here (none is re-identified on the far side);
        ids go on counting."""
        self.tracks = []

    # -- carried between frame ranges --

    def state(self) -> dict:
        """The tracker's state as JSON-ready plain data (`from_state` restores it exactly:
        floats round-trip through JSON unchanged)."""
        return {"next_id": self.next_id, "tracks": [t.to_json() for t in self.tracks]}

    @classmethod
    def from_state(cls, config: TrackerConfig, state: dict) -> Tracker:
        """A tracker continuing from `state()` of one with the same config."""
        return cls(config, state["next_id"], [Track.from_json(t) for t in state["tracks"]])

    # -- steps --

    def _parent_index(self, tracks: list[Track]) -> np.ndarray:
        """For each track, the position of its parent track in `tracks`, or -1."""
        pos = {t.track_id: i for i, t in enumerate(tracks)}
        return np.array([pos.get(t.parent, -1) for t in tracks], np.int64)

    def _alive(self, t: Track, frame: int) -> bool:
        """Whether a track is still waiting: unmatched for at most `track_buffer` frames,
        or `exit_buffer` frames when it was last seen at the edge of the frame (it left:
        nothing else can take its place but an object coming in)."""
        ago, cfg = frame - t.last_frame, self.config
        return ago <= cfg.track_buffer + 1 or (ago <= cfg.exit_buffer + 1 and at_border(t.box, t.size))

    def _predict(self, tracks: list[Track], frame: int) -> tuple[list[dict], np.ndarray]:
        """Each track's last mask moved to where it should be now (RLEs), and its
        predicted centre ``(len(tracks), 2)``."""
        shifted, centres = [], np.zeros((len(tracks), 2))
        for i, t in enumerate(tracks):
            box, (vx, vy), ago = t.box.tolist(), t.vel.tolist(), frame - t.last_frame
            dx, dy = clamped_xy(box, vx * ago, vy * ago, t.size)
            # out of the frame for longer than the buffer: only its centre is used (re-identification)
            shifted.append(t.rle if ago > self.config.track_buffer + 1 else shift_rle(t.rle, dx * t.size[0] + dy))
            centres[i] = (box[0] + box[2]) / 2 + dx, (box[1] + box[3]) / 2 + dy
        return shifted, centres

    def _absorb(self, t: Track, dets: FrameDetections, d: int, frame: int) -> None:
        """Update a track with its matched detection: mask, box, velocity, size."""
        t.merged = 0
        box = dets.boxes[d]
        # on plain floats (the same arithmetic as on 2-vectors, which cost more here)
        new = box.tolist()
        ago = max(frame - t.last_frame, 1)
        vx, vy = t.vel.tolist()
        sx, sy = box_step_xy(t.box.tolist(), new, None if t.hits == 1 else (vx * ago, vy * ago))
        a = 1.0 if t.hits == 1 else self.config.velocity_smoothing  # first step: take it whole
        t.vel = np.array(((1 - a) * vx + a * (sx / ago), (1 - a) * vy + a * (sy / ago)))
        t.rle, t.box, t.last_frame = dets.rles[d], box, frame
        t.extent = max(0.99 * t.extent, extent(new))
        t.hits += 1
        t.vote(int(dets.labels[d]))
        observe_color(t, dets, d, self.config.color_separation)

    def _coast(self, t: Track, predicted: dict, frame: int, label: int) -> None:
        """Keep a track on its predicted course through a detection that also covers
        another track (two objects seen as one): its row gets the id, but neither the
        mask nor the motion is taken from the merged shape."""
        dx, dy = clamped_xy(t.box.tolist(), *(t.vel * (frame - t.last_frame)).tolist(), t.size)
        t.rle, t.box, t.last_frame = predicted, t.box + np.array([dx, dy, dx, dy], np.float64), frame
        t.hits += 1
        t.vote(label)

    def _start(self, dets: FrameDetections, d: int, frame: int, parent: int = 0) -> int:
        """A new track from detection `d`; its id."""
        rle = dets.rles[d]
        box = dets.boxes[d]
        track = Track(
            track_id=self.next_id, label=int(dets.labels[d]), rle=rle,
            size=(int(rle["size"][0]), int(rle["size"][1])), box=box, vel=np.zeros(2),
            extent=extent(box), last_frame=frame, parent=parent, votes={int(dets.labels[d]): 1},
        )
        observe_color(track, dets, d, self.config.color_separation)
        self.tracks.append(track)
        self.next_id += 1
        return track.track_id


def assign_ids(
    frames: np.ndarray,
    labels: np.ndarray,
    rles: list[dict],
    tracker: Tracker | None,
    low_frames: np.ndarray | None = None,
    low_labels: np.ndarray | None = None,
    low_rles: list[dict] | None = None,
    colors: np.ndarray | None = None,
    low_colors: np.ndarray | None = None,
    cuts: np.ndarray | None = None,
) -> np.ndarray:
    """Track ids for kept instances given in any order; `tracker=None` means tracking off.

    Frames are fed to the tracker in increasing order; within a frame, instances keep
    their input order, so ids are a pure function of the input.

    Args:
        frames: ``(N,)`` frame of each kept instance.
        labels: ``(N,)`` their class ids.
        rles: their N COCO RLE masks.
        tracker: the tracker to advance, or None (every id 0).
        low_frames, low_labels, low_rles: ``(M,)``, ``(M,)`` and M masks of the
            lower-score detections of the same frames (second pass, no ids).
        colors, low_colors: ``(N, 3)`` and ``(M, 3)`` mean colours under the masks
            (`segflow.ops.appearance.mask_colors`), or None (no appearance cue).
        cuts: ``(K,)`` frames that begin a new shot (`segflow.ops.shots.cut_frames`):
            the tracker's tracks end before each (`Tracker.cut`), also after the last
            frame with detections, so the tracker's state after the call has none
            left from before the last cut. None: no cuts.

    Returns:
        ``(N,)`` int64 track ids.
    """
    frames = np.asarray(frames, np.int64)
    ids = np.zeros(len(frames), np.int64)
    if tracker is None:
        return ids
    labels = np.asarray(labels, np.int64)
    low_frames = np.zeros(0, np.int64) if low_frames is None else np.asarray(low_frames, np.int64)
    low_labels = np.zeros(0, np.int64) if low_labels is None else np.asarray(low_labels, np.int64)
    low_rles = low_rles or []
    colors = None if colors is None else np.asarray(colors, np.float64).reshape(len(frames), 3)
    low_colors = None if low_colors is None else np.asarray(low_colors, np.float64).reshape(len(low_frames), 3)
    cuts = np.zeros(0, np.int64) if cuts is None else np.unique(np.asarray(cuts, np.int64))
    applied = 0  # cuts applied so far
    for frame in np.union1d(frames, low_frames):
        upto = int(np.searchsorted(cuts, frame, side="right"))  # cuts at or before this frame
        if upto > applied:
            tracker.cut()
            applied = upto
        idx = np.flatnonzero(frames == frame)
        lo = np.flatnonzero(low_frames == frame)
        ids[idx] = tracker.update(
            int(frame), labels[idx], [rles[i] for i in idx], low_labels[lo], [low_rles[i] for i in lo],
            None if colors is None else colors[idx], None if low_colors is None else low_colors[lo],
        )
    if len(cuts) > applied:  # a cut after the last frame with detections
        tracker.cut()
    return ids
