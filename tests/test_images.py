"""Image sets and preprocessing on real files of every awkward kind."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from rmt_deploy.data.images import Preprocess, load_batch, open_image_set
from rmt_deploy.errors import UserInputError


def _save(path, mode="RGB", size=(40, 30), value=128):
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "I;16":
        Image.fromarray(np.full(size[::-1], value * 257, np.uint16)).save(path)
    else:
        Image.new(mode, size, value if mode in ("L", "P") else (value,) * len(mode)).save(path)
    return path


def test_imagefolder_sorted_classes(tmp_path):
    for cls in ("b", "a", "c"):
        _save(tmp_path / cls / "x.png")
    images = open_image_set(tmp_path)
    assert images.classes == ("a", "b", "c") and images.labels == (0, 1, 2)


def test_flat_folder_and_list_file(tmp_path):
    a, _b = _save(tmp_path / "imgs" / "a.jpg"), _save(tmp_path / "imgs" / "b.png")
    assert open_image_set(tmp_path / "imgs").labels is None
    (tmp_path / "list.txt").write_text(f"# two images\n{a}\nimgs/b.png\n")
    assert [p.name for p in open_image_set(tmp_path / "list.txt").paths] == ["a.jpg", "b.png"]


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16", "CMYK"])
def test_modes_become_rgb(tmp_path, mode):
    _save(tmp_path / f"img.{'jpg' if mode == 'CMYK' else 'png'}", mode)
    x, skipped, _ = load_batch(open_image_set(tmp_path), Preprocess((32, 32)))
    assert x.shape == (1, 3, 32, 32) and x.dtype == np.float32 and not skipped


def test_sixteen_bit_is_rescaled(tmp_path):
    _save(tmp_path / "a.png", "I;16", value=200)
    _save(tmp_path / "b.png", "L", value=200)
    x, _, _ = load_batch(open_image_set(tmp_path), Preprocess((32, 32), mean=(0, 0, 0), std=(1, 1, 1)))
    np.testing.assert_allclose(x[0], x[1], atol=1 / 255)


def test_resize_and_centre_crop_non_square(tmp_path):
    _save(tmp_path / "wide.png", size=(300, 100))
    x, _, _ = load_batch(open_image_set(tmp_path), Preprocess((64, 96), crop_pct=0.875))
    assert x.shape == (1, 3, 64, 96)


@pytest.mark.parametrize("image_wh,size,crop_pct", [((200, 160), (64, 64), 0.875), ((120, 300), (96, 64), 0.9),
                                                    ((256, 256), (64, 96), 1.0)])
def test_crop_takes_the_centre_pixel_for_pixel(image_wh, size, crop_pct):
    """Red encodes the column and green the row of every source pixel (linear ramps, which bicubic
    resampling reproduces away from the borders), so each output pixel tells where it came from:
    resize to cover ``size / crop_pct`` keeping the aspect, then the centred crop — not a stretch,
    not an off-centre crop. A uniform image could not tell these apart."""
    width, height = image_wh
    cols, rows = np.meshgrid(np.arange(width), np.arange(height))
    red, green = cols * (255 / (width - 1)), rows * (255 / (height - 1))
    image = Image.fromarray(np.stack([red, green, np.zeros_like(red)], -1).round().astype(np.uint8), "RGB")
    x = Preprocess(size, crop_pct=crop_pct, mean=(0, 0, 0), std=(1, 1, 1))(image) * 255

    h, w = size
    scale = max(h / height, w / width) / crop_pct  # cover size / crop_pct …
    rh, rw = int(np.ceil(height * scale - 1e-6)), int(np.ceil(width * scale - 1e-6))
    top, left = (rh - h) // 2, (rw - w) // 2  # … then the centre
    source_col = (left + np.arange(w) + 0.5) * width / rw - 0.5  # output pixel centre → source coordinate
    source_row = (top + np.arange(h) + 0.5) * height / rh - 0.5
    inside = (slice(3, -3), slice(3, -3))  # clear of the resampling kernel's reach over the image border
    want_red = np.broadcast_to(source_col * 255 / (width - 1), (h, w))
    want_green = np.broadcast_to((source_row * 255 / (height - 1))[:, None], (h, w))
    assert np.abs(x[0] - want_red)[inside].max() < 1.0 and np.abs(x[1] - want_green)[inside].max() < 1.0


def test_normalisation(tmp_path):
    _save(tmp_path / "grey.png", "L", value=255)
    x, _, _ = load_batch(open_image_set(tmp_path), Preprocess((32, 32), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)))
    np.testing.assert_allclose(x, 2.0, atol=1e-6)


def test_corrupt_files_skipped_and_listed(tmp_path):
    _save(tmp_path / "good.png")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    x, skipped, kept = load_batch(open_image_set(tmp_path), Preprocess((32, 32)))
    assert len(x) == 1 and [p.name for p in skipped] == ["bad.png"] and kept == [1]


def test_all_corrupt_fails(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"nope")
    with pytest.raises(UserInputError, match="could be decoded"):
        load_batch(open_image_set(tmp_path), Preprocess((32, 32)))


@pytest.mark.parametrize("setup,match", [
    (lambda p: None, "not found"),
    (lambda p: p.mkdir(), "no images"),
    (lambda p: (p.mkdir(), (p / "cls").mkdir()), "no images"),
    (lambda p: p.write_text(""), "not a .txt"),
])
def test_bad_sources(tmp_path, setup, match):
    target = tmp_path / "src"
    setup(target)
    with pytest.raises(UserInputError, match=match):
        open_image_set(target)


def test_empty_list_file(tmp_path):
    (tmp_path / "l.txt").write_text("\n# nothing\n")
    with pytest.raises(UserInputError, match="empty"):
        open_image_set(tmp_path / "l.txt")


def test_subset_is_deterministic_and_spread(tmp_path):
    for cls in range(4):
        for i in range(5):
            _save(tmp_path / str(cls) / f"{i}.png")
    images = open_image_set(tmp_path)
    sub = images.subset(4)
    assert sub.paths == images.subset(4).paths and sorted(sub.labels) == [0, 1, 2, 3]


def test_decompression_bombs_are_refused_in_one_line_and_big_photos_are_not(tmp_path):
    """A PNG header can claim any size: over 2^28 pixels is refused before decoding; a 200 MP
    phone photo's size is under the limit (Pillow's own default would refuse it)."""
    import struct
    import zlib

    from rmt_deploy.data.images import MAX_PIXELS, UnreadableImage, read_image

    def png_claiming(w: int, h: int) -> bytes:
        small = tmp_path / "small.png"
        Image.new("L", (1, 1)).save(small)
        data = bytearray(small.read_bytes())
        data[16:24] = struct.pack(">II", w, h)  # IHDR width, height; then its CRC
        data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
        return bytes(data)

    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_claiming(40000, 40000))
    with pytest.raises(UnreadableImage, match=r"bomb.png: 40000x40000 pixels is over the 268,435,456-pixel limit"):
        read_image(bomb)
    photo = tmp_path / "photo.png"
    photo.write_bytes(png_claiming(16320, 12240))  # 200 MP: within the limit, so decoding starts (and the stub fails)
    assert 16320 * 12240 < MAX_PIXELS
    with pytest.raises(UnreadableImage) as e:
        read_image(photo)
    assert "limit" not in str(e.value)
