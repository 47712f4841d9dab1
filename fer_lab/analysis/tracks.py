"""Keeping a face's id while it stays in view: greedy IoU matching of each detection
round's boxes to the tracks alive, as SORT does without its motion model (faces in
front of a camera move little between detections a fraction of a second apart)."""

from __future__ import annotations

from dataclasses import dataclass

from fer_lab.analysis.detect import Box


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two ``(x, y, w, h)`` boxes."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    w = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    h = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = w * h
    return inter / (aw * ah + bw * bh - inter) if inter else 0.0


@dataclass
class Track:
    id: int
    box: Box
    missed: int = 0
    seen: float | None = None  # the time of its last box, where frames have times


class Tracker:
    """Gives each detected face an id that it keeps across frames.

    Args:
        min_iou: the least overlap for a box to continue a track.
        max_missed: detection rounds a track survives without a box (a blink, a turned
            head); after that a face that comes back gets a new id...
        max_gap: ...unless it was seen less than this many seconds before (with times
            given to ``update``): detecting on every frame of a 30 fps video, three
            missed rounds are a tenth of a second.
    """

    def __init__(self, min_iou: float = 0.3, max_missed: int = 2, max_gap: float = 0.0):
        self.min_iou = min_iou
        self.max_missed = max_missed
        self.max_gap = max_gap
        self.tracks: list[Track] = []
        self._next = 1

    def update(self, boxes: list[Box], time: float | None = None) -> list[int]:
        """The id of each box, in order: the best-overlapping live track's, or a new one.
        ``time``: the frame's, in seconds (video)."""
        pairs = sorted(((iou(t.box, b), ti, bi) for ti, t in enumerate(self.tracks)
                        for bi, b in enumerate(boxes)), reverse=True)
        ids: list[int | None] = [None] * len(boxes)
        taken = set()
        for overlap, ti, bi in pairs:
            if overlap < self.min_iou:
                break
            if ti in taken or ids[bi] is not None:
                continue
            taken.add(ti)
            track = self.tracks[ti]
            track.box, track.missed, track.seen = boxes[bi], 0, time
            ids[bi] = track.id
        for ti, track in enumerate(self.tracks):
            if ti not in taken:
                track.missed += 1
        self.tracks = [t for t in self.tracks if t.missed <= self.max_missed or (
            time is not None and t.seen is not None and time - t.seen < self.max_gap)]
        for bi, box in enumerate(boxes):
            if ids[bi] is None:
                self.tracks.append(Track(self._next, box, seen=time))
                ids[bi] = self._next
                self._next += 1
        return ids
