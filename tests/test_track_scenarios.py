"""The tracker on the scripted scenarios of bench/scenes.py, fed their exact visible masks.

Each scenario is one thing a tracker must survive: a larger object hiding a smaller one
while both move (opposite directions, overtaking), crossings at several speeds and
sizes, full occlusion of 1-10 frames by a moving panel, two same-class objects swapping
places, an object leaving and coming back. Fed the ground truth's visible masks (every
visible instance, nothing else), a tracker must give each object exactly one id.
"""

from __future__ import annotations

import numpy as np
import pycocotools.mask as mask_utils
import pytest

from segflow.ops.tracker import Tracker, TrackerConfig, assign_ids
from tests.conftest import bench_module

scenes = bench_module("scenes")


def visible_instances(name: str):
    """frames, labels, RLEs and true object of every visible instance of a scenario."""
    frames, labels, rles, truth = [], [], [], []
    for f, (_, gt) in enumerate(scenes.render(scenes.scenarios()[name])):
        for oid, cid, m in gt:
            frames.append(f), labels.append(cid), truth.append(oid)
            rles.append(mask_utils.encode(np.asfortranarray(m.astype(np.uint8))))
    return np.array(frames), np.array(labels), rles, np.array(truth)


@pytest.mark.parametrize("name", sorted(scenes.scenarios()))
@pytest.mark.parametrize("class_penalty", [0.05, 0.3])
def test_each_object_keeps_one_id_through_the_scenario(name, class_penalty):
    frames, labels, rles, truth = visible_instances(name)
    ids = assign_ids(frames, labels, rles, Tracker(TrackerConfig(class_penalty=class_penalty)))
    pairs = set(zip(ids.tolist(), truth.tolist()))
    assert len(pairs) == len(set(truth.tolist())) == len(set(ids.tolist())), sorted(pairs)


def test_scenario_ids_do_not_depend_on_where_ranges_are_cut():
    frames, labels, rles, _ = visible_instances("occluder_long")
    whole = assign_ids(frames, labels, rles, Tracker())
    tracker, parts = Tracker(), []
    for lo, hi in ((0, 17), (18, 44), (45, 80)):  # cut mid-occlusion; state through JSON, as the cache does
        idx = np.flatnonzero((frames >= lo) & (frames <= hi))
        parts.append(assign_ids(frames[idx], labels[idx], [rles[i] for i in idx], tracker))
        tracker = Tracker.from_state(tracker.config, tracker.state())
    assert np.array_equal(np.concatenate(parts), whole)
