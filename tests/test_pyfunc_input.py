"""Property-based tests of the model's input handling: any input either becomes flat uint8
pixels or raises one ``InputError`` that names the bad row; nothing else escapes."""

import base64
import io

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from fer_lab.pyfunc import InputError, to_pixels

N = 2304
SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def good_row(seed: int) -> str:
    return " ".join(map(str, np.random.default_rng(seed).integers(0, 256, N)))


tokens = st.one_of(st.integers(-300, 600).map(str), st.text(max_size=4),
                   st.sampled_from(["", " ", "1.5", "1e2", "٣", "0x10", "nan"]))


@st.composite
def pixel_frames(draw):
    """Frames of good rows with at most one damaged row (tokens cut, added or replaced)."""
    n = draw(st.integers(1, 4))
    rows = [good_row(draw(st.integers(0, 10**6))) for _ in range(n)]
    bad = draw(st.one_of(st.none(), st.integers(0, n - 1)))
    if bad is not None:
        values = rows[bad].split()
        how = draw(st.sampled_from(["cut", "add", "replace"]))
        if how == "cut":
            values = values[:draw(st.integers(0, N - 1))]
        elif how == "add":
            values += draw(st.lists(tokens, min_size=1, max_size=3))
        else:
            values[draw(st.integers(0, N - 1))] = draw(tokens)
        rows[bad] = " ".join(values)
    return pd.DataFrame({"pixels": rows}), bad


@SETTINGS
@given(case=pixel_frames())
def test_pixel_strings_parse_or_name_the_row(case):
    frame, bad = case
    try:
        pixels = to_pixels(frame)
    except InputError as err:
        assert bad is not None and f"row {bad}:" in str(err)
        return
    assert pixels.shape == (len(frame), N) and pixels.dtype == np.uint8
    for i, text in enumerate(frame["pixels"]):
        np.testing.assert_array_equal(pixels[i], np.array(text.split(), dtype=np.int64))


def png(seed: int, size: tuple[int, int], mode: str) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).convert(
        mode).save(buffer, "PNG")
    return buffer.getvalue()


@SETTINGS
@given(seed=st.integers(0, 1000), size=st.tuples(st.integers(1, 200), st.integers(1, 200)),
       mode=st.sampled_from(["L", "RGB", "RGBA", "P"]),
       cut=st.one_of(st.none(), st.integers(0, 60)), as_text=st.booleans())
def test_images_decode_or_name_the_row(seed, size, mode, cut, as_text):
    data = png(seed, size, mode)
    if cut is not None:
        data = data[:cut]  # a truncated upload
    value = base64.b64encode(data).decode() if as_text else data
    frame = pd.DataFrame({"image": [png(0, (48, 48), "L"), value]})
    try:
        pixels = to_pixels(frame)
    except InputError as err:
        assert cut is not None and str(err).startswith("row 1:")
        return
    assert pixels.shape == (2, N) and pixels.dtype == np.uint8


def test_an_image_decodes_as_it_is_shown_and_16_bit_ones_are_scaled():
    """A phone's portrait (stored on its side, EXIF orientation 6) is a face upright; a
    16-bit grey image keeps its contrast instead of turning white."""
    stored = np.zeros((48, 48), np.uint8)
    stored[:, :24] = 255  # left half white as stored: the top half once turned upright
    exif = Image.Exif()
    exif[0x0112] = 6
    jpeg = io.BytesIO()
    Image.fromarray(stored).save(jpeg, "JPEG", exif=exif, quality=95)
    sixteen = io.BytesIO()
    Image.fromarray(np.tile(np.linspace(0, 65535, 48).astype(np.uint16), (48, 1))).save(
        sixteen, "PNG")
    upright, scaled = to_pixels(pd.DataFrame({"image": [jpeg.getvalue(),
                                                        sixteen.getvalue()]})).reshape(2, 48, 48)
    assert upright[:20].mean() > 230 and upright[28:].mean() < 25
    assert scaled[:, 0].max() < 10 and scaled[:, -1].min() > 245
    assert 110 < scaled.mean() < 145


@SETTINGS
@given(blob=st.one_of(st.binary(max_size=200), st.text(max_size=50), st.integers(), st.none()))
def test_arbitrary_image_cells_never_crash(blob):
    with pytest.raises(InputError, match="row 0:"):
        to_pixels(pd.DataFrame({"image": [blob]}))


def is_valid_pixels(array: np.ndarray) -> bool:
    """What the pyfunc promises to take: numbers, (N, 48, 48) or (N, 2304), whole values
    0..255."""
    if array.dtype.kind not in "uif" or array.shape[1:] not in ((48, 48), (N,)):
        return False
    values = array.astype(np.float64)
    return bool(np.all(np.isfinite(values)) and np.all((values >= 0) & (values <= 255))
                and np.all(values == np.round(values)))


@SETTINGS
@given(array=hnp.arrays(
    dtype=st.one_of(hnp.integer_dtypes(), hnp.unsigned_integer_dtypes(), hnp.floating_dtypes(),
                    hnp.boolean_dtypes(), st.just(np.dtype("U3")), st.just(np.dtype("O"))),
    shape=st.one_of(st.just((2, 48, 48)), st.just((3, N)),
                    hnp.array_shapes(min_dims=1, max_dims=4, max_side=50))))
def test_arrays_convert_or_explain(array):
    try:
        pixels = to_pixels(array)
    except InputError as err:
        assert str(err)
        assert not is_valid_pixels(array), f"valid pixels refused: {err}"
        return
    assert pixels.dtype == np.uint8 and pixels.shape == (len(array), N)
    assert array.dtype.kind in "uif"
    np.testing.assert_array_equal(pixels, array.reshape(len(array), N))


def test_what_other_tools_write_is_read():
    """ICML's CSV columns (" pixels"), base64 wrapped at 76 columns (`base64` without -w0,
    encodebytes), and an empty JSON list of inputs."""
    rows = [good_row(1), good_row(2)]
    icml = pd.DataFrame({"emotion": [0, 1], " Usage": ["PrivateTest"] * 2, " pixels": rows})
    np.testing.assert_array_equal(to_pixels(icml), to_pixels(pd.DataFrame({"pixels": rows})))
    face = png(3, (64, 64), "L")
    wrapped = base64.encodebytes(face).decode()
    assert "\n" in wrapped
    np.testing.assert_array_equal(to_pixels(pd.DataFrame({"image": [wrapped]})),
                                  to_pixels(pd.DataFrame({"image": [face]})))
    assert to_pixels([]).shape == (0, N)


def test_a_png_damaged_after_its_first_data_chunk_is_an_input_error():
    """Pillow raises SyntaxError for such a chunk: it must name the row like any bad image."""
    data = png(4, (300, 300), "RGB")  # large enough for several IDAT chunks
    second = data.index(b"IDAT", data.index(b"IDAT") + 4)
    damaged = data[:second] + b"ID\x00T" + data[second + 4:]
    with pytest.raises(InputError, match="row 0: cannot decode the image"):
        to_pixels(pd.DataFrame({"image": [damaged]}))
