"""``fer-lab analyze``: sources analysed one after the other, the outputs written, the run
recorded. What was analysed before a failure or a Ctrl-C is always written out."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from fer_lab.analysis import outputs, sources
from fer_lab.analysis.analyzer import Analyzer, frames_table

ROLE = "analysis"


@dataclass
class Outcome:
    """What an analysis produced: the frames table, the files written, the speed reached
    (analysed frames per second of wall time, decoding included), the sources that failed
    and why, the files of folders that were skipped and why, and the MLflow run that holds
    it all."""

    frames: pd.DataFrame
    written: list[Path]
    seconds: float
    frames_analysed: int
    errors: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    interrupted: bool = False
    run_id: str | None = None

    @property
    def fps(self) -> float:
        return self.frames_analysed / self.seconds if self.seconds > 0 else 0.0


def analyze(specs: list[str], analyzer: Analyzer, out: Path, every: int = 1,
            fps: float | None = None, max_seconds: float | None = None,
            annotate: bool = False, experiment: str | None = "fer-lab",
            show: bool | None = None, progress: bool = True) -> Outcome:
    """Analyses each source in turn and writes the outputs into ``out``.

    Args:
        specs: video files, webcam indices, images or folders of images.
        analyzer: the model and detector to use.
        out: the output folder.
        every, fps, max_seconds: which frames, as ``Analyzer.frames`` takes them.
        annotate: also write each video with boxes and labels drawn
            (``annotated.mp4``; ``annotated_<name>.mp4`` for several videos).
        experiment: record an MLflow run (``fer.role=analysis``) in this experiment
            holding the outputs; ``None`` records nothing.
        show: show a webcam's frames in a window (default: when a display exists).
        progress: a progress bar on files (on a terminal).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows, errors, skipped, videos_written, analysed = [], [], [], [], 0
    interrupted = False
    videos = [s for s in specs if not _is_images(s)]
    start = time.perf_counter()
    names: set[str] = set()
    for spec in specs:
        writer, bar, window, source_opened = None, None, None, None
        name = ""
        if len(videos) > 1 and spec in videos:  # photos write no annotated video
            stem = name = Path(str(spec)).stem
            copies = 1
            while name in names:  # day1/interview.mp4 and day2/interview.mp4: one file each
                copies += 1
                name = f"{stem}_{copies}"
            names.add(name)

        def opened(source: sources.Source) -> None:
            nonlocal writer, bar, window, source_opened
            source_opened = source
            if annotate and source.kind != "images":
                # What is analysed per second of the source, at most its own rate; a rate
                # OpenCV cannot know (0, or a WebM's 1000) is taken as 30. Frames are then
                # placed by their times, so the video lasts what the source did.
                nominal = source.rate or 30.0
                rate = min(fps, nominal) if fps else nominal / every
                writer = outputs.AnnotatedVideo(
                    out / (f"annotated_{name}.mp4" if name else "annotated.mp4"), rate)
                videos_written.append(writer.path)
            if progress and source.frames:
                from tqdm import tqdm

                bar = tqdm(total=source.frames, unit="frame", desc=source.name, leave=False,
                           disable=None, file=sys.stderr)
            if source.kind == "webcam" and (show if show is not None else _has_display()):
                window = _Window(source.name)

        try:
            for result in analyzer.frames(spec, every, fps, max_seconds, on_open=opened):
                rows += result.rows()
                analysed += 1
                if writer is not None:
                    writer.write(result.image, result.faces, result.time)
                if bar is not None:
                    bar.update(result.index + 1 - bar.n)
                if window is not None and not window.show(result.image):
                    break
        except sources.SourceError as err:
            errors.append(str(err))
        except KeyboardInterrupt:
            interrupted = True
        finally:
            for thing in (writer, bar, window):
                if thing is not None:
                    thing.close()
            skipped += getattr(source_opened, "skipped", [])
        if interrupted:
            break
    seconds = time.perf_counter() - start
    frames = frames_table(rows, analyzer.classes)
    written = outputs.write(frames, out) if rows else []
    written += [path for path in videos_written if path.exists()]
    outcome = Outcome(frames, written, seconds, analysed, errors, skipped, interrupted)
    if experiment and rows:
        outcome.run_id = _record(outcome, analyzer, specs, experiment,
                                 every=every, fps=fps, max_seconds=max_seconds)
    return outcome


def _is_images(spec: str) -> bool:
    path = Path(str(spec))
    return path.is_dir() or path.suffix.lower() in sources.IMAGE_SUFFIXES


def _record(outcome: Outcome, analyzer: Analyzer, specs: list[str], experiment: str,
            **params) -> str:
    import mlflow

    from fer_lab import tracking
    from fer_lab.evaluate import model_tags
    from fer_lab.pyfunc import label_set_of

    tracking.configure()
    uri = analyzer.model_uri
    tags = {"fer.model_uri": uri, "fer.sources": ", ".join(map(str, specs))[:5000],
            tracking.LABELS_TAG: label_set_of(analyzer.model),
            **(model_tags(uri) if uri else {})}
    names = ", ".join(Path(str(s)).name for s in specs)
    with tracking.top_run(experiment, f"analyze · {names}"[:250], ROLE, tags) as run:
        mlflow.log_params({**{k: v for k, v in params.items() if v is not None},
                           "detector": analyzer.detector.name, "margin": analyzer.margin,
                           "min_face": analyzer.min_face or "auto",
                           "detect_interval": analyzer.detect_interval,
                           "tta": analyzer.tta})
        faces = outcome.frames[outcome.frames["face_id"].notna()]
        mlflow.log_metrics({"frames_analysed": outcome.frames_analysed,
                            "face_rows": len(faces),
                            "analysis_seconds": outcome.seconds,
                            "analysis_fps": outcome.fps})
        for path in outcome.written:
            mlflow.log_artifact(str(path), "analysis")
        if outcome.skipped:
            mlflow.log_text("\n".join(outcome.skipped) + "\n", "analysis/skipped.txt")
        return run.info.run_id


def _has_display() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
                or sys.platform in ("darwin", "win32"))


class _Window:
    """A live window of a webcam's frames; ``q`` or Esc ends the analysis. With OpenCV's
    headless build (fer-lab's) there is no window: it says so once."""

    def __init__(self, title: str):
        self.title, self.ok = title, True

    def show(self, image) -> bool:
        import cv2

        if not self.ok:
            return True
        try:
            cv2.imshow(self.title, image)
            return cv2.waitKey(1) & 0xFF not in (ord("q"), 27)
        except cv2.error:
            self.ok = False
            print("no live window: this OpenCV has no GUI (opencv-python-headless); "
                  "install opencv-python for one", file=sys.stderr)
            return True

    def close(self) -> None:
        if self.ok:
            import cv2

            try:
                cv2.destroyWindow(self.title)
            except cv2.error:
                pass
