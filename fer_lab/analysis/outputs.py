"""What an analysis writes: the frames table, its summary, a timeline plot and the
annotated video."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

# Smoothing window of the timeline, in seconds of video.
SMOOTH_SECONDS = 1.0


def class_columns(frames: pd.DataFrame) -> list[str]:
    """The frames table's probability columns, one per class of the model that made it:
    those after ``confidence``."""
    return list(frames.columns[frames.columns.get_loc("confidence") + 1:])


def _durations(frames: pd.DataFrame) -> pd.Series:
    """Seconds each analysed frame stands for: the gap to the next analysed frame of its
    source (the last one takes the median gap); 1 for photos, which have no time."""
    out = pd.Series(1.0, index=frames.index)
    for _, part in frames.groupby("source", sort=False):
        times = part.drop_duplicates("frame")[["frame", "time_s"]]
        if times["time_s"].isna().all():
            continue
        gaps = times["time_s"].diff().shift(-1)
        gaps.iloc[-1] = gaps.median() if len(gaps) > 1 else 0.0
        per_frame = dict(zip(times["frame"], gaps.fillna(0.0)))
        out.loc[part.index] = part["frame"].map(per_frame).to_numpy()
    return out


def _emotion_summary(faces: pd.DataFrame, seconds: pd.Series) -> dict[str, Any]:
    weight = seconds.loc[faces.index]
    if not float(weight.sum()):  # no duration (a lone frame, photos): each frame counts once
        weight = pd.Series(1.0, index=faces.index)
    total = float(weight.sum())
    classes = class_columns(faces)
    share = {e: float(weight[faces["emotion"] == e].sum() / total) if total else 0.0
             for e in classes}
    mean = {e: float(np.average(faces[e], weights=weight)) if total else float(faces[e].mean())
            for e in classes}
    return {"share_of_time": share, "mean_probabilities": mean,
            "dominant_emotion": max(share, key=share.get) if len(faces) else None}


def summarize(frames: pd.DataFrame) -> dict[str, Any]:
    """Per source: frames analysed, seconds covered, the share of frames with a face; per
    face id, first and last seen, seconds in view, share of its time per emotion, mean
    probabilities and the dominant emotion; and the same over all the source's faces."""
    seconds = _durations(frames)
    out: dict[str, Any] = {}
    for source, part in frames.groupby("source", sort=False):
        with_face = part[part["face_id"].notna()]
        frame_ids = part["frame"].unique()
        timed = part["time_s"].notna().any()
        entry: dict[str, Any] = {
            "frames_analysed": int(len(frame_ids)),
            "seconds": float(seconds.loc[part.drop_duplicates("frame").index].sum())
            if timed else None,
            "frames_with_faces": int(with_face["frame"].nunique()),
            "faces": {},
            "all_faces": _emotion_summary(with_face, seconds) if len(with_face) else None,
        }
        if timed:  # tracked faces: ids mean the same person across frames
            for face_id, face in with_face.groupby("face_id"):
                entry["faces"][str(int(face_id))] = {
                    "first_seen_s": float(face["time_s"].min()),
                    "last_seen_s": float(face["time_s"].max()),
                    "seconds_in_view": float(seconds.loc[face.index].sum()),
                    "frames": int(len(face)),
                    **_emotion_summary(face, seconds),
                }
        out[str(source)] = entry
    return {"sources": out}


def plot_timeline(frames: pd.DataFrame, path: Path, most_faces: int = 6) -> Path | None:
    """Each tracked face's emotion probabilities over time, smoothed over about a second,
    with the raw values faint; one panel per face (the ``most_faces`` longest in view) per
    video source. Nothing is drawn for photos."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels, spans = [], {}
    for source, part in frames[frames["time_s"].notna()].groupby("source", sort=False):
        spans[source] = (part["time_s"].min(), part["time_s"].max())
        part = part[part["face_id"].notna()]
        counts = part["face_id"].value_counts().head(most_faces)
        panels += [(source, face_id, part[part["face_id"] == face_id])
                   for face_id in sorted(counts.index)]
    if not panels:
        return None
    colours = plt.get_cmap("tab10").colors
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 2.2 * len(panels) + 0.6),
                             sharex=False, squeeze=False)
    for ax, (source, face_id, face) in zip(axes[:, 0], panels):
        t = face["time_s"].to_numpy()
        step = float(np.median(np.diff(t))) if len(t) > 1 else 1.0
        window = max(1, int(round(SMOOTH_SECONDS / step))) if step > 0 else 1
        for i, emotion in enumerate(class_columns(frames)):
            values = face[emotion]
            ax.plot(t, values, color=colours[i], alpha=0.2, linewidth=0.8)
            ax.plot(t, values.rolling(window, center=True, min_periods=1).mean(),
                    color=colours[i], linewidth=1.6, label=emotion)
        ax.set_ylim(0, 1)
        if spans[source][1] > spans[source][0]:  # one time axis for a source's faces
            ax.set_xlim(*spans[source])
        ax.set_ylabel("probability")
        ax.set_title(f"{Path(str(source)).name}: face {int(face_id)}", fontsize=10, loc="left")
    axes[-1, 0].set_xlabel("seconds")
    axes[0, 0].legend(ncol=len(class_columns(frames)), fontsize=8, loc="upper center",
                      bbox_to_anchor=(0.5, 1.45), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


class AnnotatedVideo:
    """Writes frames with each face's box, id and emotion drawn on them (MPEG-4), at
    ``fps`` frames per second. Frames given their times are placed by them: one is
    repeated until the next one's time (a webcam analysed slower than it films, a variable
    frame rate) or left out when the next comes within the same 1/fps, so the video lasts
    what the source did."""

    def __init__(self, path: Path, fps: float):
        self.path, self.fps, self._writer = Path(path), fps, None
        self._last: np.ndarray | None = None
        self._start: float | None = None
        self._written = 0

    def write(self, image: np.ndarray, faces, time: float | None = None) -> None:
        drawn = self._draw(image, faces)
        if self._last is None:
            import cv2

            h, w = drawn.shape[:2]
            self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"),
                                           self.fps, (w, h))
            self._start = time
        else:  # the previous frame stands until this one's time
            due = 1 if time is None or self._start is None \
                else round((time - self._start) * self.fps) - self._written
            for _ in range(due):
                self._writer.write(self._last)
            self._written += max(due, 0)
        self._last = drawn

    def _draw(self, image: np.ndarray, faces) -> np.ndarray:
        import cv2

        image = image.copy() if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        for face in faces:
            x, y, w, h = face.box
            cv2.rectangle(image, (x, y), (x + w, y + h), (0, 200, 255), 2)
            label = f"{'' if face.id is None else f'#{face.id} '}{face.emotion} " \
                    f"{face.confidence:.2f}"
            cv2.putText(image, label, (x, max(y - 6, 12)), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                        (0, 200, 255), 1, cv2.LINE_AA)
        return image

    def close(self) -> None:
        if self._writer is not None:
            self._writer.write(self._last)
            self._writer.release()
            self._writer = None


def write(frames: pd.DataFrame, out: Path) -> list[Path]:
    """Writes ``frames.csv`` (and ``frames.parquet`` where pyarrow is installed),
    ``summary.json`` and ``timeline.png`` into ``out``; returns the paths written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "frames.csv"]
    frames.to_csv(written[0], index=False, float_format="%.4f")
    try:
        frames.to_parquet(out / "frames.parquet", index=False)
        written.append(out / "frames.parquet")
    except ImportError:
        pass
    (out / "summary.json").write_text(json.dumps(summarize(frames), indent=2) + "\n")
    written.append(out / "summary.json")
    timeline = plot_timeline(frames, out / "timeline.png")
    if timeline is not None:
        written.append(timeline)
    return written
