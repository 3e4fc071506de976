import numpy as np
import pytest
from PIL import Image

from edge.errors import InputError
from edge.preprocess import InputSpec, Preprocessor, guess_layout, list_images, load_image


def spec(dtype, shape=(1, 4, 4, 3), layout="NHWC", scale=0.0, zp=0):
    h, w, c = (shape[1], shape[2], shape[3]) if layout == "NHWC" else (shape[2], shape[3], shape[1])
    return InputSpec(0, "x", shape, np.dtype(dtype), layout, h, w, c, scale, zp)


def test_guess_layout():
    assert guess_layout((1, 224, 224, 3)) == "NHWC"
    assert guess_layout((1, 3, 224, 224)) == "NCHW"
    assert guess_layout((1, 28, 28)) is None


def test_uint8_fed_raw_when_quantization_matches():
    p = Preprocessor(spec(np.uint8, scale=1 / 128, zp=128), 128, 128)
    assert p.raw
    px = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    assert np.array_equal(p(px)[0], px)


def test_uint8_normalized_then_quantized():
    # pycoral: (x - mean) / (std * scale) + zero_point, clipped to 0..255
    p = Preprocessor(spec(np.uint8, scale=1 / 255, zp=0), 0, 1)
    assert not p.raw
    px = np.full((4, 4, 3), 2, np.uint8)
    assert np.all(p(px) == 255)  # 2 / (1/255) = 510 -> clipped
    p = Preprocessor(spec(np.uint8, scale=0.5, zp=10), 100, 1)
    assert p(np.full((4, 4, 3), 104, np.uint8))[0, 0, 0, 0] == 18  # (104-100)/0.5 + 10


def test_int8_input():
    p = Preprocessor(spec(np.int8, scale=1 / 128, zp=0), 128, 128)
    x = p(np.array([[[0, 128, 255]]], np.uint8).repeat(4, 0).repeat(4, 1))
    assert x.dtype == np.int8 and x[0, 0, 0].tolist() == [-128, 0, 127]


def test_float_per_channel_and_nchw():
    p = Preprocessor(spec(np.float32, shape=(1, 3, 4, 4), layout="NCHW"), [10, 20, 30], [2, 4, 5])
    px = np.zeros((4, 4, 3), np.uint8) + np.array([12, 24, 35], np.uint8)
    x = p(px)
    assert x.shape == (1, 3, 4, 4) and x.dtype == np.float32
    assert np.allclose(x[0, :, 0, 0], [1, 1, 1])


def test_bad_mean_std():
    with pytest.raises(InputError, match="per channel"):
        Preprocessor(spec(np.float32), [1, 2], 1)
    with pytest.raises(InputError, match="std must not be 0"):
        Preprocessor(spec(np.float32), 0, 0)


def test_quantized_input_without_parameters():
    with pytest.raises(InputError, match="no quantization"):
        Preprocessor(spec(np.uint8), 128, 128)


@pytest.mark.parametrize("mode", ["RGB", "L", "P", "RGBA", "CMYK", "I;16", "LA", "1", "F"])
def test_image_modes_become_rgb(tmp_path, mode):
    im = Image.new("RGB", (8, 6), (200, 40, 10)).convert(mode) if mode not in ("I;16", "F") else \
        Image.fromarray(np.full((6, 8), 50000 if mode == "I;16" else 100.0,
                                np.uint16 if mode == "I;16" else np.float32))
    path = tmp_path / f"x.{'tiff' if mode in ('I;16', 'F', 'CMYK') else 'png'}"
    im.save(path)
    out = load_image(path)
    assert out.mode == "RGB" and out.size == (8, 6)
    if mode == "I;16":  # 16-bit scaled down, not clipped to white
        assert np.asarray(out)[0, 0, 0] == round(50000 * 255 / 65535)


def test_exif_rotation_is_applied(tmp_path):
    im = Image.new("RGB", (8, 4), (0, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    im.save(tmp_path / "r.jpg", exif=exif)
    assert load_image(tmp_path / "r.jpg").size == (4, 8)


def test_bad_images(tmp_path):
    (tmp_path / "not.jpg").write_text("hello")
    with pytest.raises(InputError, match="cannot read image"):
        load_image(tmp_path / "not.jpg")
    Image.new("RGB", (64, 64)).save(tmp_path / "t.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "t.png").read_bytes()[:60])
    with pytest.raises(InputError, match="cannot read image"):
        load_image(tmp_path / "cut.png")
    with pytest.raises(InputError, match="does not exist"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(InputError, match="is a folder"):
        load_image(tmp_path)


def test_list_images(tmp_path):
    for n in ("b.png", "a.JPG", "notes.txt"):
        (tmp_path / n).write_bytes(b"")
    assert [p.rsplit("/", 1)[1] for p in list_images([str(tmp_path)])] == ["a.JPG", "b.png"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no images"):
        list_images([str(tmp_path / "empty")])


@pytest.mark.parametrize("dtype,scale,zp,mean,std", [
    (np.int8, 1 / 128, -1, 127, 128), (np.uint8, 1 / 255, 0, 0, 1), (np.uint8, 0.02, 100, [120, 110, 100], [60, 55, 50]),
    (np.int8, 0.05, 3, [10, 20, 30], [2, 3, 4]),
])
def test_lookup_table_matches_the_arithmetic(dtype, scale, zp, mean, std):
    p = Preprocessor(spec(dtype, shape=(1, 4, 4, 3), scale=scale, zp=zp), mean, std)
    px = np.random.default_rng(1).integers(0, 256, (4, 4, 3), dtype=np.uint8)
    want = np.rint((px - np.float32(mean)) / np.float32(std) / np.float32(scale) + zp)
    info = np.iinfo(dtype)
    want = np.clip(want, info.min, info.max).astype(dtype)[None]
    got = p(px)
    assert got.dtype == dtype and np.array_equal(got, want)
