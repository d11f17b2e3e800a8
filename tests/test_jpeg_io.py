"""Reading and writing real files through libjpeg."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from jpegrestore import jpeg
from jpeg_helpers import photo, pillow_decode, pillow_jpeg, psnr_uint8, to_tensor, to_uint8

CASES = [
    ("4:2:0", {}), ("4:4:4", {}), ("4:2:2", {}),
    ("4:2:0", {"progressive": True}), ("4:2:0", {"optimize": True}), ("4:4:4", {"progressive": True}),
]


@pytest.mark.parametrize("subsampling, options", CASES)
def test_read_gives_exact_coefficients_and_tables(tmp_path, subsampling, options):
    img = photo("astronaut", 101, 93, 150, 200)
    path = tmp_path / "a.jpg"
    path.write_bytes(pillow_jpeg(img, 37, subsampling, **options))
    c = jpeg.read(path)
    assert c.subsampling == subsampling and c.size == (101, 93) and c.y.dtype == torch.int32
    assert torch.equal(c.qt[0, :2], jpeg.quant_tables(37)[0])
    # Our encoder, written independently of libjpeg, predicts every coefficient in the file.
    ours = jpeg.encode(to_tensor(img), 37, subsampling=subsampling)
    for a, b in zip(c.components(), ours.components()):
        assert torch.equal(a.float(), b)
    ref = pillow_decode(path.read_bytes())
    assert np.array_equal(to_uint8(jpeg.decode(c, rounding="exact")), ref)
    assert psnr_uint8(to_uint8(jpeg.decode(c)), ref) >= 50


def test_grayscale_and_custom_table(tmp_path):
    gray = photo("camera", 70, 83)
    path = tmp_path / "g.jpg"
    path.write_bytes(pillow_jpeg(gray, 22))
    c = jpeg.read(path)
    assert c.num_components == 1 and c.cb is None
    assert np.array_equal(to_uint8(jpeg.decode(c, rounding="exact")), pillow_decode(path.read_bytes()))

    table = [int(v) for v in np.random.default_rng(0).integers(1, 100, 64)]
    img = photo("coffee", 64, 80)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", qtables=[table, table[::-1]], subsampling=2)
    path = tmp_path / "custom.jpg"
    path.write_bytes(buf.getvalue())
    c = jpeg.read(path)
    assert sorted(c.qt[0, 0].flatten().int().tolist()) == sorted(table)
    # The file's own tables work in place of a quality.
    assert torch.equal(jpeg.encode(to_tensor(img), tables=c.qt).y, c.y.float())


def test_write_round_trips_losslessly(tmp_path):
    for subsampling in ("4:2:0", "4:4:4"):
        img = photo("chelsea", 77, 99, 10, 10)
        src = tmp_path / "src.jpg"
        src.write_bytes(pillow_jpeg(img, 61, subsampling))
        c = jpeg.read(src)
        out = tmp_path / "out.jpg"
        jpeg.write(out, c)
        assert np.array_equal(pillow_decode(out.read_bytes()), pillow_decode(src.read_bytes()))
        again = jpeg.read(out)
        assert all(torch.equal(a, b) for a, b in zip(again.components(), c.components()))
    # Coefficients from encode can be written too.
    coeffs = jpeg.encode(to_tensor(photo("rocket", 40, 50)), 30)
    jpeg.write(tmp_path / "e.jpg", coeffs)
    ref = pillow_decode(pillow_jpeg(photo("rocket", 40, 50), 30))
    assert np.array_equal(pillow_decode((tmp_path / "e.jpg").read_bytes()), ref)
    with pytest.raises(ValueError, match="one image"):
        jpeg.write(tmp_path / "b.jpg", jpeg.Coefficients.cat([coeffs, coeffs]))


def _bad_files(tmp_path):
    good = pillow_jpeg(photo("astronaut", 64, 64), 50)
    files = {
        "empty.jpg": b"",
        "truncated.jpg": good[: len(good) // 2],
        "text.jpg": b"this is not an image",
        "png.jpg": _png_bytes(),
    }
    cmyk = io.BytesIO()
    Image.fromarray(photo("astronaut", 32, 32)).convert("CMYK").save(cmyk, "JPEG")
    files["cmyk.jpg"] = cmyk.getvalue()
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return files


def _png_bytes():
    buf = io.BytesIO()
    Image.fromarray(photo("astronaut", 16, 16)).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize(
    "name, error, match",
    [
        ("empty.jpg", OSError, "empty"),
        ("truncated.jpg", OSError, "truncated"),
        ("text.jpg", OSError, "not a JPEG"),
        ("png.jpg", OSError, "not a JPEG"),
        ("cmyk.jpg", ValueError, "CMYK"),
    ],
)
def test_bad_files_are_clear_errors(tmp_path, name, error, match):
    _bad_files(tmp_path)
    with pytest.raises(error, match=match) as info:
        jpeg.read(tmp_path / name)
    assert name in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        jpeg.read(tmp_path / "missing.jpg")
