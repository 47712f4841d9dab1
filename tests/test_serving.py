"""Using a registered model: `fer-lab predict` on files, and a real `mlflow models serve`."""

import base64
import io
import json
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from conftest import mlflow_server
from PIL import Image

from fer_lab import cli, pyfunc, registry
from fer_lab.data import EMOTIONS

MODEL = f"models:/{registry.BEST_MODEL}@{registry.CHAMPION}"


# One xdist worker runs the module: its tests share one registered champion.
pytestmark = pytest.mark.xdist_group("serving")

def write_faces(folder: Path, faces: np.ndarray) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (face, fmt, size) in enumerate(zip(faces, ["PNG", "JPEG", "PNG"],
                                              [(48, 48), (120, 100), (300, 300)])):
        path = folder / f"face{i}.{fmt.lower().replace('jpeg', 'jpg')}"
        Image.fromarray(face.reshape(48, 48)).resize(size).convert(
            "RGB" if fmt == "JPEG" else "L").save(path, fmt)
        paths.append(path)
    return paths


def test_predict_classifies_a_folder_of_images_of_several_sizes(champion, tmp_path, capsys):
    paths = write_faces(tmp_path / "faces", champion.X[:3])
    assert cli.main(["predict", str(tmp_path / "faces")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split() == ["file", "emotion", "confidence"]
    assert len(lines) == 4
    for line, path in zip(lines[1:], paths):
        name, emotion, confidence = line.split()
        assert name == str(path) and emotion in EMOTIONS and 0 < float(confidence) <= 1


def test_predict_explains_each_face_with_an_overlay(champion, tmp_path, capsys):
    from PIL import Image as PILImage

    paths = write_faces(tmp_path / "faces", champion.X[:3])
    out = tmp_path / "why"
    assert cli.main(["predict", *map(str, paths), "--explain", "--out", str(out)]) == 0
    table = capsys.readouterr().out.strip().splitlines()[1:]
    written = sorted(out.glob("*.png"))
    assert len(written) == 3
    for line, png in zip(table, written):  # named for the face and the emotion it was given
        file, emotion, _ = line.split()
        assert Path(file).name in png.name and png.stem.endswith(emotion)
        with PILImage.open(png) as image:
            assert image.size == (192, 192) and image.mode == "RGB"
    assert cli.main(["predict", str(paths[0]), "--explain"]) == 1
    assert "--out" in capsys.readouterr().err


def test_predict_reads_a_kaggle_csv_and_writes_csv(champion, tmp_path, capsys):
    csv = tmp_path / "faces.csv"
    csv.write_text("emotion,pixels,Usage\n" + "".join(
        f"0,{p},PrivateTest\n" for p in pyfunc.pixel_strings(champion.X[:2])))
    assert cli.main(["predict", str(csv), "--csv", "--model", MODEL]) == 0
    rows = capsys.readouterr().out.strip().splitlines()
    assert rows[0] == "file,box,emotion,confidence," + ",".join(EMOTIONS)
    assert rows[1].startswith(f"{csv}:2,") and rows[2].startswith(f"{csv}:3,")


def test_predict_detects_faces_in_a_photo(champion, tmp_path, capsys):
    from skimage import data as skimage_data

    photo = tmp_path / "astronaut.jpg"  # a real portrait photo shipped with scikit-image
    Image.fromarray(skimage_data.astronaut()).save(photo)
    assert cli.main(["predict", "--detect-faces", str(photo)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split() == ["file", "box", "emotion", "confidence"]
    assert len(lines) >= 2
    x, y, w, h = map(int, lines[1].split()[1].split(","))
    assert 150 < x + w / 2 < 300 and 50 < y + h / 2 < 200  # her face, in the upper middle


def test_predict_explains_bad_input(champion, tmp_path, capsys):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    assert cli.main(["predict", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "broken.png: cannot decode the image: not in a format" in err
    assert "BytesIO" not in err and "Traceback" not in err
    assert cli.main(["predict", str(tmp_path / "missing")]) == 1
    assert "no such file" in capsys.readouterr().err


def test_predict_reads_the_icml_csv_that_data_check_accepts(champion, tmp_path, capsys):
    csv = tmp_path / "icml_face_data.csv"  # Kaggle's other layout: spaces after the commas
    csv.write_text("emotion, Usage, pixels\n" + "".join(
        f"0,PrivateTest,{p}\n" for p in pyfunc.pixel_strings(champion.X[:2])))
    assert cli.main(["predict", str(csv)]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 3


def test_predict_says_which_photo_has_no_face(champion, tmp_path, capsys):
    from skimage import data as skimage_data

    photo, empty = tmp_path / "astronaut.jpg", tmp_path / "wall.png"
    Image.fromarray(skimage_data.astronaut()).save(photo)
    Image.fromarray(np.full((240, 320), 128, np.uint8)).save(empty)
    assert cli.main(["predict", "--detect-faces", str(photo), str(empty)]) == 0
    out, err = capsys.readouterr()
    assert f"{empty}: no face found" in err and str(photo) in out and str(empty) not in out
    assert cli.main(["predict", "--detect-faces", str(empty)]) == 1
    assert "no face to classify" in capsys.readouterr().err


def post(url: str, payload) -> tuple[int, dict]:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


@pytest.fixture
def server(champion, module_tracking, tmp_path):
    with mlflow_server(["models", "serve", "-m", MODEL, "--env-manager", "local",
                        "--workers", "1"], "/ping", tmp_path / "serve.log",
                       {"MLFLOW_TRACKING_URI": module_tracking}) as url:
        yield url, champion


def test_served_model_answers_pixels_and_images_and_rejects_bad_payloads(server):
    url, val = server
    pixels = {"dataframe_split": {"columns": ["pixels"],
                                  "data": [[p] for p in pyfunc.pixel_strings(val.X[:3])]}}
    status, body = post(f"{url}/invocations", pixels)
    assert status == 200 and len(body["predictions"]) == 3
    assert set(body["predictions"][0]) == {"emotion", "emotion_id", *EMOTIONS}

    def b64png(face):
        buffer = io.BytesIO()
        Image.fromarray(face.reshape(48, 48)).resize((96, 96)).save(buffer, "PNG")
        return base64.b64encode(buffer.getvalue()).decode()

    images = {"dataframe_split": {"columns": ["image"], "data": [[b64png(f)] for f in val.X[:2]]}}
    status, body = post(f"{url}/invocations", images)
    assert status == 200 and len(body["predictions"]) == 2

    for bad, words in [
        ({"dataframe_split": {"columns": ["pixels"], "data": [["1 2 3"]]}}, "expected 2304"),
        ({"dataframe_split": {"columns": ["image"], "data": [["bm90IGFuIGltYWdl"]]}},
         "cannot decode"),
        (b"{not json", ""),
    ]:
        status, body = post(f"{url}/invocations", bad)
        assert 400 <= status < 500
        assert words in body.get("message", "")
    status, body = post(f"{url}/invocations", pixels)  # still serving
    assert status == 200


def test_predict_on_a_folder_skips_what_is_not_a_face_file(champion, tmp_path, capsys):
    """A FERPlus-made folder has a label.csv beside its PNGs, a Mac-copied one ._ files: the
    faces are classified and the rest skipped or named, not the end of the command; a
    file named on the command line that cannot be read still fails."""
    folder = tmp_path / "FER2013Test"
    write_faces(folder, champion.X[:2])
    (folder / "label.csv").write_text("fer0032220.png,0,0,10,0,0,0,0,0,0,0\n")
    (folder / "broken.png").write_bytes(b"not a png")
    (folder / "._face0.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    assert cli.main(["predict", str(folder)]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.strip().splitlines()) == 1 + 2
    assert "skipped: " in captured.err and "label.csv: expected a 'pixels' column" in captured.err
    assert "broken.png: cannot decode the image" in captured.err and "._face0" not in captured.err
    assert cli.main(["predict", str(folder / "broken.png"), str(folder)]) == 1
