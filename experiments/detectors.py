"""Face detectors against each other on real faces, offline, and the crop margin that
gives FER2013's framing back.

    python experiments/detectors.py --data ../shared/data/fer2013/fer2013.csv.gz \
        --model models:/fer-emotion@champion

Frames are 640x480 scenes (scikit-image's bundled photographs and textures, no faces in
them) with one to three FER2013 validation faces pasted in, each 48 to 160 px, in three
conditions: upright, dim (a third of the light, with sensor noise) and turned (rotated
in-plane by 15 to 30 degrees, as tilted heads are). For each detector, looking for faces
from 40 px (as in photos) and from 80 px (as in video frames), it prints recall (a
detection whose IoU with the pasted face is at least 0.3) over all faces and over those
of 80 px or more, false positives per frame on the same frames and on the empty scenes,
and milliseconds per frame.

Then, with ``--model``, it crops each upright face that the detector found with several
margins, classifies the crops and prints the accuracy beside the accuracy on the faces as
FER2013 gives them: the margin that comes closest is the one ``fer_lab.analysis.detect``
uses. Only the validation carve of Training is used (the protocol: nothing is chosen on a
test split).
"""

import argparse
import time

import cv2
import numpy as np
import skimage.data

from fer_lab import machine, tracking
from fer_lab.analysis import detect
from fer_lab.analysis.tracks import iou
from fer_lab.data import load, split

# scikit-image's bundled pictures without a human face in them (a cat, a cup, a rocket,
# textures, text, a microscope slide, the sky)
SCENES = ["coffee", "chelsea", "rocket", "coins", "brick", "grass", "gravel", "text",
          "hubble_deep_field", "immunohistochemistry", "moon", "page"]
MARGINS = [-0.1, 0.0, 0.1, 0.15, 0.2, 0.3, 0.4]


def scenes(size=(640, 480)) -> list[np.ndarray]:
    out = []
    for name in SCENES:
        image = np.asarray(getattr(skimage.data, name)(), dtype=np.uint8)
        grey = image if image.ndim == 2 else cv2.cvtColor(image[..., :3], cv2.COLOR_RGB2GRAY)
        out.append(cv2.resize(grey, size, interpolation=cv2.INTER_AREA))
    return out


def paste(scene, faces, condition, rng):
    """The scene with the faces pasted at random free places; their true boxes."""
    frame, boxes = scene.copy(), []
    for face in faces:
        side = int(rng.integers(48, 161))
        patch = cv2.resize(face.reshape(48, 48), (side, side), interpolation=cv2.INTER_CUBIC)
        mask = np.full((side, side), 255, np.uint8)
        if condition == "turned":
            angle = float(rng.choice([-1, 1]) * rng.uniform(15, 30))
            m = cv2.getRotationMatrix2D((side / 2, side / 2), angle, 1.0)
            patch = cv2.warpAffine(patch, m, (side, side), borderMode=cv2.BORDER_REPLICATE)
            mask = cv2.warpAffine(mask, m, (side, side))
        for _ in range(50):
            x, y = int(rng.integers(0, 640 - side)), int(rng.integers(0, 480 - side))
            if all(iou((x, y, side, side), b) == 0 for b in boxes):
                break
        region = frame[y:y + side, x:x + side]
        region[mask > 0] = patch[mask > 0]
        boxes.append((x, y, side, side))
    if condition == "dim":
        noisy = frame.astype(np.float32) / 3 + rng.normal(0, 4, frame.shape)
        frame = np.clip(noisy, 0, 255).astype(np.uint8)
    return frame, boxes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/fer2013/fer2013.csv.gz")
    parser.add_argument("--model", help="an MLflow model URI, for the margin table")
    parser.add_argument("--frames", type=int, default=200, help="frames per condition")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    val = split(load(args.data)).val
    backgrounds = scenes()
    here = machine.current()
    print(f"machine: {here.cpu} (fer.isa {here.isa}), opencv {cv2.__version__}\n")

    frames = {}
    for condition in ("upright", "dim", "turned"):
        frames[condition] = []
        for _ in range(args.frames):
            picks = rng.choice(len(val.X), size=int(rng.integers(1, 4)), replace=False)
            scene = backgrounds[int(rng.integers(len(backgrounds)))]
            frame, boxes = paste(scene, val.X[picks], condition, rng)
            frames[condition].append((frame, boxes, picks))

    found = {}
    print("| detector | min face (px) | condition | faces | recall | recall, faces >= 80 px "
          "| false positives / frame | ms / frame |")
    print("|---|---|---|---|---|---|---|---|")
    for name in detect.detectors():
        detector = detect.create(name)
        for min_face in (40, 80):
            for condition, items in frames.items():
                hits, big, big_hits, faces, false = 0, 0, 0, 0, 0
                start = time.perf_counter()
                results = [detector(frame, min_face) for frame, _, _ in items]
                ms = (time.perf_counter() - start) / len(items) * 1000
                for (frame, boxes, picks), got in zip(items, results):
                    faces += len(boxes)
                    for box, pick in zip(boxes, picks):
                        best = max(got, key=lambda g: iou(g, box), default=None)
                        hit = best is not None and iou(best, box) >= 0.3
                        hits += hit
                        big += box[2] >= 80
                        big_hits += hit and box[2] >= 80
                        if hit and condition == "upright" and min_face == 40:
                            found.setdefault(name, []).append((frame, best, pick))
                    false += sum(all(iou(g, b) < 0.3 for b in boxes) for g in got)
                print(f"| {name} | {min_face} | {condition} | {faces} | {hits / faces:.3f} | "
                      f"{big_hits / big:.3f} | {false / len(items):.2f} | {ms:.1f} |")
            start = time.perf_counter()
            empty = sum(len(detector(scene, min_face)) for scene in backgrounds)
            ms = (time.perf_counter() - start) / len(backgrounds) * 1000
            print(f"| {name} | {min_face} | empty scenes | 0 | - | - | "
                  f"{empty / len(backgrounds):.2f} | {ms:.1f} |")

    if not args.model:
        return
    tracking.configure()
    import mlflow

    model = mlflow.pyfunc.load_model(args.model)
    print(f"\n{args.model}: accuracy on the upright faces found (from 40 px), cropped with "
          "each margin")
    print("| detector | faces | as FER2013 gives them | " +
          " | ".join(f"margin {m:+.2f}" for m in MARGINS) + " |")
    print("|---|---|---|" + "---|" * len(MARGINS))
    for name, items in found.items():
        truth = val.y[[pick for _, _, pick in items]]
        original = val.X[[pick for _, _, pick in items]]
        scores = [_accuracy(model, original, truth)]
        for margin in MARGINS:
            crops = np.stack([detect.crop(frame, box, margin) for frame, box, _ in items])
            scores.append(_accuracy(model, crops, truth))
        print(f"| {name} | {len(items)} | " + " | ".join(f"{s:.3f}" for s in scores) + " |")


def _accuracy(model, pixels, truth) -> float:
    return float((model.predict(pixels)["emotion_id"].to_numpy() == truth).mean())


if __name__ == "__main__":
    main()
