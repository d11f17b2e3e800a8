import jpeglib
import numpy as np
import pytest
import torch

from jpegrestore import jpeg
from jpeg_helpers import photo, pillow_jpeg


def test_quant_tables_equal_what_pillow_writes_for_every_quality(tmp_path):
    img = photo("astronaut", 16, 16)
    ours = jpeg.quant_tables(torch.arange(1, 101))
    assert ours.shape == (100, 2, 8, 8)
    for q in range(1, 101):
        path = tmp_path / "t.jpg"
        path.write_bytes(pillow_jpeg(img, q))
        written = jpeglib.read_dct(str(path)).qt  # natural order, as libjpeg stored it
        np.testing.assert_array_equal(ours[q - 1].numpy(), written.astype(np.float32), err_msg=f"quality {q}")


def test_known_values():
    t = jpeg.quant_tables(50)[0]
    assert t[0, 0, 0] == 16 and t[1, 0, 0] == 17  # quality 50 is the Annex K table itself
    assert torch.all(jpeg.quant_tables(100) == 1)
    assert torch.all(jpeg.quant_tables(1) == 255)  # baseline clamp


@pytest.mark.parametrize("bad", [0, 101, -5, 50.5, [10, 0], torch.tensor([101])])
def test_bad_quality_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="quality"):
        jpeg.quant_tables(bad)
