"""`fer-lab analyze` and `Analyzer`: faces found, tracked and classified in videos and photos."""

import json

import cv2
import mlflow
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fer_lab import Analyzer, cli, pyfunc, registry
from fer_lab.analysis import demo, detect, outputs
from fer_lab.analysis.analyzer import DETECT_INTERVAL
from fer_lab.analysis.tracks import Tracker
from fer_lab.data import EMOTIONS

MODEL = f"models:/{registry.BEST_MODEL}@{registry.CHAMPION}"
pytestmark = pytest.mark.xdist_group("analysis")

FPS = 25
FRAMES = 60
GONE = range(25, 38)  # frames in which nobody is in view


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return demo.write_video(tmp_path_factory.mktemp("video") / "two_faces.mp4", FRAMES, FPS,
                            faces=2, gone=GONE)


@pytest.fixture(scope="module")
def analysed(champion, video, tmp_path_factory):
    out = tmp_path_factory.mktemp("analysis")
    code = cli.main(["analyze", str(video), "--model", MODEL, "--out", str(out), "--annotate"])
    return code, out


def test_a_video_gives_a_row_per_face_per_frame_in_time(analysed):
    code, out = analysed
    assert code == 0
    frames = pd.read_csv(out / "frames.csv")
    assert list(frames.columns[:11]) == ["source", "file", "frame", "time_s", "face_id", "x",
                                         "y", "w", "h", "emotion", "confidence"]
    assert sorted(frames["frame"].unique()) == list(range(FRAMES))  # faceless frames too
    times = frames.drop_duplicates("frame")["time_s"].to_numpy()
    assert np.allclose(np.diff(times), 1 / FPS, atol=1e-3) and times[0] == 0
    empty = frames[frames["face_id"].isna()]
    assert (empty.groupby("frame").size() == 1).all()  # a frame without a face: one empty row
    # faces are detected every DETECT_INTERVAL seconds: found back at most that late
    late = set(empty["frame"]) - set(GONE)
    assert set(GONE) <= set(empty["frame"]) and max(late, default=GONE.stop) - GONE.stop \
        < DETECT_INTERVAL * FPS
    faces = frames[frames["face_id"].notna()]
    assert np.allclose(faces[list(EMOTIONS)].sum(axis=1), 1, atol=1e-3)
    assert (faces["emotion"] == faces[list(EMOTIONS)].idxmax(axis=1)).all()
    assert pd.read_parquet(out / "frames.parquet").shape == frames.shape


def test_each_face_keeps_one_id_while_in_view(analysed):
    _, out = analysed
    frames = pd.read_csv(out / "frames.csv").dropna(subset=["face_id"])
    before = frames[frames["frame"] < GONE.start]
    after = frames[frames["frame"] >= GONE.stop + DETECT_INTERVAL * FPS]
    assert before.groupby("frame").size().eq(2).all() and after.groupby("frame").size().eq(2).all()
    # the walking face on the left and the still one on the right: one id each
    for part in (before, after):
        left = part[part["x"] < 320]["face_id"].unique()
        right = part[part["x"] >= 320]["face_id"].unique()
        assert len(left) == 1 and len(right) == 1 and left[0] != right[0]
    # 0.5 s out of view: back with new ids
    assert set(before["face_id"]).isdisjoint(after["face_id"])
    walking = before[before["x"] < 320].sort_values("frame")["x"].to_numpy()
    assert walking[-1] > walking[0] + 20  # the box follows the face


def test_the_summary_timeline_and_annotated_video(analysed):
    _, out = analysed
    summary = json.loads((out / "summary.json").read_text())
    (source, entry), = summary["sources"].items()
    assert source.endswith("two_faces.mp4")
    assert entry["frames_analysed"] == FRAMES
    assert FRAMES - len(GONE) - DETECT_INTERVAL * FPS <= entry["frames_with_faces"] \
        <= FRAMES - len(GONE)
    assert entry["seconds"] == pytest.approx(FRAMES / FPS, abs=0.05)
    assert len(entry["faces"]) == 4
    first = entry["faces"]["1"]
    assert first["first_seen_s"] == 0
    assert first["last_seen_s"] == pytest.approx((GONE.start - 1) / FPS, abs=1e-3)
    assert first["seconds_in_view"] == pytest.approx(GONE.start / FPS, abs=1e-3)
    assert sum(first["share_of_time"].values()) == pytest.approx(1)
    assert first["dominant_emotion"] == max(first["share_of_time"], key=first["share_of_time"].get)
    assert entry["all_faces"]["dominant_emotion"] in EMOTIONS
    with Image.open(out / "timeline.png") as image:
        assert image.size[1] > 400  # a panel per face
    annotated = cv2.VideoCapture(str(out / "annotated.mp4"))
    assert int(annotated.get(cv2.CAP_PROP_FRAME_COUNT)) == FRAMES
    ok, first_frame = annotated.read()
    annotated.release()
    assert ok and first_frame.shape == (480, 640, 3)


def test_videos_of_one_name_in_two_folders_get_an_annotated_video_each(champion, video,
                                                                       tmp_path):
    from fer_lab.analysis import job

    copies = []
    for day in ("day1", "day2"):
        (tmp_path / day).mkdir()
        copies.append(tmp_path / day / "interview.mp4")
        copies[-1].write_bytes(video.read_bytes())
    outcome = job.analyze([str(c) for c in copies], Analyzer(MODEL), tmp_path / "out",
                          max_seconds=0.2, annotate=True, experiment=None, progress=False)
    written = sorted(p.name for p in (tmp_path / "out").glob("annotated_*.mp4"))
    assert written == ["annotated_interview.mp4", "annotated_interview_2.mp4"]
    assert len([p for p in outcome.written if p.suffix == ".mp4"]) == 2


def test_a_video_with_one_analysed_frame_is_summarised_by_that_frame():
    """A clip shorter than one --fps step: no duration to weight by, yet its face's
    emotion is the frame's, not the first class's."""
    happy = {e: 0.0 for e in EMOTIONS} | {"happy": 0.9, "neutral": 0.1}
    frames = pd.DataFrame([{"source": "clip.mp4", "frame": 0, "time_s": 0.0, "face_id": 1.0,
                            "emotion": "happy", "confidence": 0.9, **happy}])
    entry = outputs.summarize(frames)["sources"]["clip.mp4"]
    for summary in (entry["all_faces"], entry["faces"]["1"]):
        assert summary["dominant_emotion"] == "happy"
        assert summary["share_of_time"]["happy"] == 1.0
        assert summary["mean_probabilities"]["happy"] == pytest.approx(0.9)


def test_the_analysis_is_an_mlflow_run(analysed):
    runs = mlflow.search_runs(experiment_names=["fer-lab"],
                              filter_string="tags.`fer.role` = 'analysis'", output_format="list")
    assert runs
    run = runs[0]
    assert run.data.tags["fer.model_uri"] == MODEL
    assert run.data.tags["fer.model"].startswith(f"{registry.BEST_MODEL}/")
    assert run.data.metrics["frames_analysed"] == FRAMES
    assert run.data.metrics["analysis_fps"] > 0
    names = {f.path for f in mlflow.MlflowClient().list_artifacts(run.info.run_id, "analysis")}
    assert {"analysis/frames.csv", "analysis/summary.json", "analysis/timeline.png",
            "analysis/annotated.mp4"} <= names


def test_every_and_fps_choose_the_frames(champion, video):
    analyzer = Analyzer(MODEL, detect_interval=0)
    every_frame = analyzer.analyze(video)
    assert set(every_frame[every_frame["face_id"].isna()]["frame"]) == set(GONE)
    every = analyzer.analyze(video, every=5)
    assert sorted(every["frame"].unique()) == list(range(0, FRAMES, 5))
    per_second = analyzer.analyze(video, fps=5)
    assert sorted(per_second["frame"].unique()) == list(range(0, FRAMES, 5))
    # A rate that does not divide the source's keeps its grid: 10 a second of 25, not 8.3.
    ten = analyzer.analyze(video, fps=10)
    assert ten["frame"].nunique() == 10 * FRAMES // FPS
    with pytest.raises(ValueError, match="not both"):
        analyzer.analyze(video, every=2, fps=10)
    with pytest.raises(ValueError, match="positive"):
        analyzer.analyze(video, fps=0)
    short = analyzer.analyze(video, max_seconds=1.0)
    assert short["time_s"].max() <= 1.0 and short["frame"].nunique() == FPS + 1


def test_detect_takes_every_image_form(champion, tmp_path):
    analyzer = Analyzer(MODEL)
    bgr = cv2.copyMakeBorder(demo.portrait(), 60, 60, 80, 80, cv2.BORDER_CONSTANT,
                             value=(90, 90, 90))
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    path = tmp_path / "portrait.png"
    cv2.imwrite(str(path), bgr)
    forms = {"path": str(path), "pathlib": path, "bytes": path.read_bytes(), "bgr": bgr,
             "grey": cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), "pil": Image.fromarray(rgb),
             "float 0..1": bgr.astype(np.float32) / 255}
    found = {name: analyzer.detect(image) for name, image in forms.items()}
    found["rgb"] = analyzer.detect(rgb, channels="rgb")
    reference = found["bgr"]
    assert len(reference) == 1
    face = reference[0]
    x, y, w, h = face["box"]
    assert 80 <= x + w / 2 <= 80 + 132 and 60 <= y + h / 2 <= 60 + 192
    assert set(face["emotions"]) == set(EMOTIONS) and face["emotion"] in EMOTIONS
    assert face["confidence"] == pytest.approx(max(face["emotions"].values()))
    for name, faces in found.items():
        assert len(faces) == 1, name
        assert np.allclose(faces[0]["box"], face["box"], atol=3), name
        assert faces[0]["emotions"]["happy"] == pytest.approx(face["emotions"]["happy"],
                                                               abs=0.05), name
    assert analyzer.detect(np.full((240, 320), 128, np.uint8)) == []


def test_bad_sources_say_what_is_wrong_and_keep_what_was_done(champion, video, tmp_path,
                                                             capsys):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 4096)
    empty = tmp_path / "empty.avi"
    empty.write_bytes(b"")
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    cases = {str(tmp_path / "missing.mp4"): "missing.mp4: no such file",
             str(broken): "broken.mp4: cannot open the video",
             str(empty): "empty.avi: cannot open the video",
             str(notes): "notes.txt: not a video",
             "7": "webcam 7: no such webcam"}
    for source, message in cases.items():
        out = tmp_path / f"out_{len(source)}"
        assert cli.main(["analyze", source, "--model", MODEL, "--out", str(out),
                         "--no-log"]) == 1
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
        assert not (out / "frames.csv").exists()
    out = tmp_path / "partial"
    assert cli.main(["analyze", str(video), str(broken), "--model", MODEL, "--out", str(out),
                     "--no-log"]) == 1
    assert "broken.mp4: cannot open the video" in capsys.readouterr().err
    assert pd.read_csv(out / "frames.csv")["frame"].nunique() == FRAMES


def test_a_folder_of_photos_is_one_frame_each(champion, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.jpg"), demo.portrait())
    cv2.imwrite(str(folder / "b.png"), np.full((200, 200, 3), 100, np.uint8))
    frames = Analyzer(MODEL).analyze(folder)
    assert list(frames["file"]) == [str(folder / "a.jpg"), str(folder / "b.png")]
    assert frames["face_id"].iloc[0] == 1 and pd.isna(frames["face_id"].iloc[1])
    assert frames["time_s"].isna().all()


def test_a_face_keeps_its_id_across_detections():
    tracker = Tracker(max_missed=1)
    assert tracker.update([(0, 0, 50, 50), (200, 0, 50, 50)]) == [1, 2]
    assert tracker.update([(205, 3, 50, 50), (4, 2, 50, 50)]) == [2, 1]
    assert tracker.update([(8, 4, 50, 50)]) == [1]  # 2 missed once: still alive
    assert tracker.update([(10, 4, 50, 50), (206, 0, 50, 50)]) == [1, 2]
    tracker.update([(12, 4, 50, 50)])
    tracker.update([(12, 4, 50, 50)])
    assert tracker.update([(206, 0, 50, 50)]) == [3]  # 2 missed twice: a new face


def test_a_face_missed_for_a_few_frames_of_a_fast_video_keeps_its_id():
    """Detecting on every frame at 30 fps, three missed frames are a tenth of a second (a
    turned head): the face keeps its id; gone longer than the gap and the rounds, not."""
    tracker = Tracker(max_missed=2, max_gap=0.4)
    face = (100, 100, 60, 60)
    assert tracker.update([face], 0.0) == [1]
    for frame in range(1, 6):  # missed in five frames, 0.17 s
        assert tracker.update([], frame / 30) == []
    assert tracker.update([face], 6 / 30) == [1]
    for frame in range(7, 30):  # missed for 0.77 s: more than the gap
        tracker.update([], frame / 30)
    assert tracker.update([face], 1.0) == [2]
    rounds = Tracker(max_missed=2, max_gap=0.4)  # without times: rounds only
    rounds.update([face])
    for _ in range(3):
        rounds.update([])
    assert rounds.update([face]) == [2]


def test_crop_is_square_and_centred_with_the_margin():
    image = np.zeros((100, 100), np.uint8)
    image[40:60, 40:60] = 255
    tight = detect.crop(image, (40, 40, 20, 20), 0.0).reshape(48, 48)
    assert tight.min() > 200  # only the square
    wide = detect.crop(image, (40, 40, 20, 20), 1.0).reshape(48, 48)
    assert wide[0, 0] == 0 and wide[24, 24] == 255 and wide[:, 24].mean() == pytest.approx(
        wide[24, :].mean(), abs=1)
    edge = detect.crop(image, (90, 90, 20, 20), 0.0)  # off the image: edges replicated
    assert edge.shape == (48 * 48,)
    # a detected face is resized as a served model resizes the same face sent as an image
    photo = np.random.default_rng(0).integers(0, 256, (200, 200), dtype=np.uint8)
    for box in [(0, 0, 200, 200), (50, 60, 30, 30)]:
        x, y, w, h = box
        served = pyfunc.face_pixels(Image.fromarray(photo[y:y + h, x:x + w]))
        assert np.array_equal(detect.crop(photo, box, 0.0), served)
    with pytest.raises(ValueError, match="known: auto, haar, hog"):
        detect.create("nosuch")


def test_ctrl_c_ends_cleanly_with_what_was_analysed_written(champion, video, tmp_path,
                                                             monkeypatch):
    from fer_lab.analysis import job, sources

    frames_of = sources._Capture.__iter__

    def interrupted(self):
        for frame in frames_of(self):
            if frame.index == 20:
                raise KeyboardInterrupt  # as Ctrl-C arrives while decoding
            yield frame

    monkeypatch.setattr(sources._Capture, "__iter__", interrupted)
    outcome = job.analyze([str(video)], Analyzer(MODEL), tmp_path / "out", experiment=None)
    assert outcome.interrupted and outcome.frames_analysed == 20
    assert pd.read_csv(tmp_path / "out" / "frames.csv")["frame"].nunique() == 20
    assert (tmp_path / "out" / "summary.json").exists()


def test_fps_at_the_sources_rate_takes_every_frame_of_a_millisecond_container(
        champion, tmp_path):
    """MKV and WebM keep times in whole milliseconds (a 30 fps frame at 0.033 s, before the
    grid's 0.0333): --fps 30 on such a 30 fps video still analyses all its frames."""
    mkv = demo.write_video(tmp_path / "clip.mkv", 30, 30.0, faces=1)
    frames = Analyzer(MODEL, detect_interval=0).analyze(mkv, fps=30)
    assert frames["frame"].nunique() == 30
    # A browser's WebM states 1000 fps: that rate is not believed.
    said_1000 = list(Analyzer(MODEL).frames(mkv, fps=30,
                                            on_open=lambda s: setattr(s, "fps", 1000.0)))
    assert len(said_1000) == 30
    assert Analyzer(MODEL).analyze(mkv, fps=10)["frame"].nunique() == 10


def test_the_annotated_video_lasts_what_the_source_did(tmp_path):
    """Frames placed by their times: a webcam analysed at 10 frames a second written at its
    30 keeps its length (each frame repeated), frames closer than 1/fps are left out, and
    frames without times are written once each."""
    def frames_written(times, fps, path):
        video = outputs.AnnotatedVideo(path, fps)
        for t in times:
            video.write(np.zeros((48, 64, 3), np.uint8), [], t)
        video.close()
        capture = cv2.VideoCapture(str(path))
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        capture.release()
        return count

    slow = [i / 10 for i in range(20)]  # 2 s at 10 frames a second
    assert frames_written(slow, 30.0, tmp_path / "slow.mp4") == 19 * 3 + 1  # and the last
    fast = [i / 100 for i in range(100)]  # 1 s at 100 frames a second
    assert frames_written(fast, 25.0, tmp_path / "fast.mp4") == 25 + 1
    assert frames_written([None] * 7, 25.0, tmp_path / "untimed.mp4") == 7


def test_a_folder_skips_what_it_cannot_read_and_goes_on(champion, tmp_path, capsys,
                                                        monkeypatch):
    """A damaged photo is named and skipped, the rest analysed (exit 0); macOS's ._ files
    and __MACOSX/ are not photos; a folder named like a webcam index is a folder."""
    folder = tmp_path / "2024"
    (folder / "__MACOSX").mkdir(parents=True)
    cv2.imwrite(str(folder / "a.jpg"), demo.portrait())
    cv2.imwrite(str(folder / "c.jpg"), demo.portrait())
    (folder / "b.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (folder / "._a.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (folder / "__MACOSX" / "._c.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["analyze", "2024", "--model", MODEL, "--out", "out", "--no-log"]) == 0
    err = capsys.readouterr().err
    assert "skipped: 2024/b.jpg: cannot decode the image" in err and "._" not in err
    files = pd.read_csv(tmp_path / "out" / "frames.csv")["file"]
    assert sorted(set(files)) == ["2024/a.jpg", "2024/c.jpg"]


def test_annotated_videos_are_named_after_the_videos_only(champion, video, tmp_path):
    """Three videos, two of one name and one already named like its copy: three files,
    found without looping; a photo folder beside one video leaves it annotated.mp4."""
    from fer_lab.analysis import job

    specs = []
    for name in ("take_2.mp4", "mon/take.mp4", "tue/take.mp4"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(video.read_bytes())
        specs.append(str(tmp_path / name))
    job.analyze(specs, Analyzer(MODEL), tmp_path / "out", max_seconds=0.1, annotate=True,
                experiment=None, progress=False)
    assert sorted(p.name for p in (tmp_path / "out").glob("*.mp4")) == [
        "annotated_take.mp4", "annotated_take_2.mp4", "annotated_take_3.mp4"]
    photos = tmp_path / "photos"
    photos.mkdir()
    cv2.imwrite(str(photos / "a.jpg"), demo.portrait())
    job.analyze([str(photos), specs[0]], Analyzer(MODEL), tmp_path / "out2", max_seconds=0.1,
                annotate=True, experiment=None, progress=False)
    assert [p.name for p in (tmp_path / "out2").glob("*.mp4")] == ["annotated.mp4"]
