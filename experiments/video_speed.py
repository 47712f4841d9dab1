"""Frames per second of ``fer-lab analyze`` end to end on a 640x480 video with three faces:
decoding, detection, tracking, cropping and the model, as the command runs them.

    python experiments/video_speed.py --model models:/fer-emotion@champion --seconds 20

The video is ``fer_lab.analysis.demo``'s (a real face, three times, on a panning scene),
written once at 25 frames/s. Each row analyses every frame with one detector and one
detection interval (the default 0.2 s, and 0: a detection on every frame); the best of
``--repeats`` runs is kept. Real time is 25 frames/s.
"""

import argparse
import tempfile
import time
from pathlib import Path

from fer_lab import Analyzer, machine, tracking
from fer_lab.analysis import demo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models:/fer-emotion@champion")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--detectors", nargs="+", default=["hog", "haar"])
    parser.add_argument("--intervals", nargs="+", type=float, default=[0.2, 0.0])
    args = parser.parse_args()
    tracking.configure()
    here = machine.current()
    print(f"machine: {here.cpu} (fer.isa {here.isa}), {here.threads} threads; "
          f"model {args.model}\n")
    print("| detector | detect every (s) | frames | faces classified | seconds | frames/s |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        video = demo.write_video(Path(tmp) / "three_faces.mp4",
                                 frames=int(args.seconds * 25), fps=25, faces=3)
        for detector in args.detectors:
            for interval in args.intervals:
                analyzer = Analyzer(args.model, detector=detector, detect_interval=interval)
                analyzer.analyze(video, max_seconds=1.0)  # warm-up: the model's first batch
                best = None
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    frames = analyzer.analyze(video)
                    seconds = time.perf_counter() - start
                    best = seconds if best is None else min(best, seconds)
                n = frames["frame"].nunique()
                faces = int(frames["face_id"].notna().sum())
                print(f"| {detector} | {interval:g} | {n} | {faces} | {best:.2f} | "
                      f"{n / best:.1f} |")


if __name__ == "__main__":
    main()
