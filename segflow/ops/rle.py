"""COCO run-length encodings handled as runs, never expanded to pixels.

A COCO RLE is ``{"size": [H, W], "counts": ...}``: run lengths over the mask flattened
in column-major (Fortran) order, alternating zeros and ones and starting with zeros.
pycocotools stores `counts` compressed as an ASCII string (its ``rleToString``): each
number in chars of 6 bits (5 value bits and a continuation bit, sign-extended), and
every count after the second stored as a delta against the count two before it.
"""

from __future__ import annotations

import numpy as np
import pycocotools.mask as mask_utils

_CONTINUATION_CHARS = bytes(range(48 + 0x20, 48 + 0x40))  # chars with the continuation bit set


def rle_runs(rle: dict) -> np.ndarray:
    """Run lengths of one COCO RLE.

    Args:
        rle: COCO RLE, compressed (str/bytes counts) or uncompressed (list counts).
    Returns:
        (R,) int64 run lengths: zeros, ones, zeros, ...; they sum to H * W.
    """
    return rles_runs([rle])[0]


def rles_runs(rles: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Run lengths of many COCO RLEs, end to end, decoded all at once with numpy.

    Args:
        rles: N COCO RLEs (compressed or uncompressed counts).
    Returns:
        runs: (R_total,) int64 run lengths of all RLEs concatenated.
        starts: (N + 1,) int64, RLE i's runs are ``runs[starts[i]:starts[i + 1]]``.
    """
    if any(isinstance(r["counts"], list) for r in rles):  # uncompressed counts, as given
        parts = [np.asarray(r["counts"], np.int64) if isinstance(r["counts"], list) else rle_runs(r) for r in rles]
        return _concatenated(parts)
    strings = [c.encode("ascii") if isinstance(c, str) else bytes(c) for c in (r["counts"] for r in rles)]
    chars = np.frombuffer(b"".join(strings), np.uint8).astype(np.int64) - 48
    if chars.size == 0:
        return np.zeros(0, np.int64), np.zeros(len(rles) + 1, np.int64)
    continues = (chars & 0x20) != 0
    number_of_char = np.concatenate([[0], np.cumsum(~continues[:-1])])
    number_ends = np.flatnonzero(~continues)
    number_starts = np.concatenate([[0], number_ends[:-1] + 1])
    char_position = np.arange(chars.size) - number_starts[number_of_char]
    shifted_bits = ((chars & 0x1F) << (5 * char_position)).astype(np.float64)
    values = np.bincount(number_of_char, weights=shifted_bits).astype(np.int64)
    negative = (chars[number_ends] & 0x10) != 0
    values[negative] -= np.left_shift(1, 5 * (char_position[number_ends][negative] + 1))
    # numbers per RLE: those ending within its chars
    string_ends = np.cumsum([len(s) for s in strings]) - 1
    starts = np.concatenate([[0], np.searchsorted(number_ends, string_ends, side="right")])
    count_index = np.arange(len(values)) - np.repeat(starts[:-1], np.diff(starts))  # index within its RLE
    # count k > 2 is value k + count k - 2: running sums along two chains per RLE (odd k, even k >= 2)
    chain_kind = np.where(count_index == 0, 0, np.where(count_index % 2 == 1, 1, 2))
    chain = np.repeat(np.arange(len(rles)) * 3, np.diff(starts)) + chain_kind
    order = np.argsort(chain, kind="stable")
    ordered_values, running_sums = values[order], np.cumsum(values[order])
    chain_heads = np.flatnonzero(np.diff(chain[order], prepend=-1))
    chain_sizes = np.diff(np.append(chain_heads, len(ordered_values)))
    runs = np.empty_like(values)
    runs[order] = running_sums - np.repeat(running_sums[chain_heads] - ordered_values[chain_heads], chain_sizes)
    return runs, starts.astype(np.int64)


def _concatenated(parts: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    sizes = np.asarray([len(p) for p in parts], np.int64)
    runs = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    return runs.astype(np.int64), np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)


def runs_to_rle(runs: np.ndarray, size: tuple[int, int]) -> dict:
    """Compressed COCO RLE from run lengths (pycocotools, in C).

    Args:
        runs: (R,) int run lengths summing to H * W.
        size: (H, W).
    Returns:
        COCO RLE with bytes `counts`.
    """
    height, width = int(size[0]), int(size[1])
    return mask_utils.frPyObjects({"size": [height, width], "counts": runs.tolist()}, height, width)


def shift_runs(runs: np.ndarray, shift: int) -> np.ndarray:
    """Runs of a mask moved by `shift` pixels in column-major order.

    A translation by (dx, dy) of an H-row mask is a shift by ``dx * H + dy``, exact as
    long as the mask stays inside the frame (callers clamp the displacement so it does).

    Args:
        runs: (R,) int64 run lengths.
        shift: pixels to move, in column-major order (may be negative).
    Returns:
        (R,) or (R + 1,) int64 run lengths (a trailing zeros run is added if needed).
    Raises:
        ValueError: the shift moves the mask out of the frame.
    """
    if shift == 0 or runs.size == 0:
        return runs
    out = runs.copy()
    out[0] += shift
    if out.size % 2 == 0:  # ends on a run of ones: add the trailing zeros run
        out = np.append(out, 0)
    out[-1] -= shift
    if out[0] < 0 or out[-1] < 0:
        raise ValueError("shift moves the mask out of the frame")
    return out


def encode_count(value: int) -> bytes:
    """One number in pycocotools' compressed counts alphabet (its ``rleToString``)."""
    out = bytearray()
    more = True
    while more:
        low_bits = value & 0x1F
        value >>= 5
        more = value != -1 if low_bits & 0x10 else value != 0
        out.append((low_bits | 0x20 if more else low_bits) + 48)
    return bytes(out)


def decode_count(chunk: bytes) -> int:
    """Inverse of `encode_count` for one number's chars."""
    value, position = 0, 0
    for char in chunk:
        value |= ((char - 48) & 0x1F) << (5 * position)
        position += 1
    if (chunk[-1] - 48) & 0x10:
        value |= -1 << (5 * position)
    return value


def shift_rle(rle: dict, shift: int) -> dict:
    """A compressed RLE moved by `shift` pixels in column-major order, without decoding it.

    Only the first count (the leading zeros, never a delta reference) and the last one
    (the trailing zeros) change, so only those two numbers are re-encoded; masks that
    end on a run of ones or have few runs take the general path (`shift_runs`).

    Args:
        rle: compressed COCO RLE of an H x W mask.
        shift: pixels to move in column-major order (``dx * H + dy``).
    Returns:
        compressed COCO RLE (bytes counts) of the moved mask, same size.
    Raises:
        ValueError: the shift moves the mask out of the frame.
    """
    counts = rle["counts"]
    if isinstance(counts, str):
        counts = counts.encode("ascii")
    if shift == 0:
        return {"size": rle["size"], "counts": counts}
    number_count = len(counts.translate(None, _CONTINUATION_CHARS))  # one terminator char per number
    if number_count < 5 or number_count % 2 == 0:
        return runs_to_rle(shift_runs(rle_runs(rle), shift), rle["size"])
    first_end = len(counts) - len(counts.lstrip(_CONTINUATION_CHARS)) + 1  # continuation chars, then its terminator
    last_start = len(counts[:-1].rstrip(_CONTINUATION_CHARS))
    first, last = decode_count(counts[:first_end]), decode_count(counts[last_start:])
    if first + shift < 0:
        raise ValueError("shift moves the mask out of the frame")
    # The last count's stored delta drops by `shift` with it; its true value must stay >= 0,
    # which the callers' clamped displacement guarantees.
    body = counts[first_end:last_start]
    return {"size": rle["size"], "counts": encode_count(first + shift) + body + encode_count(last - shift)}


def rle_boxes(rles: list[dict]) -> np.ndarray:
    """Bounding boxes of RLE masks.

    Args:
        rles: N COCO RLEs.
    Returns:
        (N, 4) float64 boxes x0, y0, x1, y1 in pixel-edge coordinates (x1 = last column + 1).
    """
    if not rles:
        return np.zeros((0, 4), np.float64)
    boxes = np.asarray(mask_utils.toBbox(rles), np.float64).reshape(-1, 4)
    boxes[:, 2:] += boxes[:, :2]
    return boxes


def rle_crops(rles: list[dict]) -> list[tuple[np.ndarray, tuple[int, int]]]:
    """`crop_mask(mask_utils.decode(rle))` of each RLE without expanding any whole frame.

    Every RLE's runs of ones are cut at column ends (the counts run down the columns)
    and placed in its box, all boxes in one buffer (column by column) filled at once
    from the pieces' gaps and lengths: the cost follows the boxes, not the frames, with
    a handful of numpy calls for all the masks.
    """
    if not rles:
        return []
    runs, start = rles_runs(rles)
    h = np.asarray([int(r["size"][0]) for r in rles], np.int64)
    w = np.asarray([int(r["size"][1]) for r in rles], np.int64)
    which = np.repeat(np.arange(len(rles)), np.diff(start))
    before_run = np.cumsum(runs) - runs
    first = before_run - np.repeat(np.append(before_run, 0)[start[:-1]], np.diff(start))  # run starts in its RLE
    on = ((np.arange(len(runs)) - start[which]) % 2 == 1) & (runs > 0)
    rle, first, length = which[on], first[on], runs[on]
    hr = h[rle]
    col_a, col_b = first // hr, (first + length - 1) // hr
    # one piece per column a run covers
    pieces = col_b - col_a + 1
    k = np.arange(int(pieces.sum())) - np.repeat(np.cumsum(pieces) - pieces, pieces)
    run = np.repeat(np.arange(len(rle)), pieces)
    rle, hr = rle[run], hr[run]
    col = col_a[run] + k
    r0 = np.where(k == 0, first[run] % hr, 0)
    r1 = np.where(col == col_b[run], (first + length - 1)[run] % hr, hr - 1) + 1  # exclusive
    has = np.flatnonzero(np.bincount(rle, minlength=len(rles)))
    at = np.searchsorted(rle, has)  # first piece of each non-empty mask (pieces in RLE order)
    y0 = np.zeros(len(rles), np.int64)
    x0, y1, x1 = y0.copy(), y0 + 1, y0 + 1  # an empty mask: one zero pixel at (0, 0)
    if len(has):
        y0[has] = np.maximum(np.minimum.reduceat(r0, at) - 1, 0)
        y1[has] = np.minimum(np.maximum.reduceat(r1, at) + 1, h[has])
        x0[has] = np.maximum(col[at] - 1, 0)  # columns ascend within a mask
        x1[has] = np.minimum(col[np.append(at[1:], len(col)) - 1] + 2, w[has])
    ch, cw = y1 - y0, x1 - x0
    base = np.cumsum(ch * cw) - ch * cw
    top = base[rle] + (col - x0[rle]) * ch[rle] - y0[rle]
    # The pieces' starts and ends ascend through the buffer: it is their gaps and
    # lengths, as zeros and ones, end to end (a fill, cheaper than a running sum).
    bounds = np.empty(2 * len(top) + 2, np.int64)
    bounds[0], bounds[1:-1:2], bounds[2:-1:2], bounds[-1] = 0, top + r0, top + r1, int((ch * cw).sum())
    buf = np.repeat(np.arange(len(bounds) - 1, dtype=np.uint8) & 1, np.diff(bounds))
    return [(np.ascontiguousarray(buf[base[i]:base[i] + ch[i] * cw[i]].reshape(cw[i], ch[i]).T), (int(x0[i]), int(y0[i])))
            for i in range(len(rles))]
