"""One decoder for training and serving: EXIF orientation for every format, every pixel layout
handled one way, and JPEG integrity judged by decoding (not by searching for an end marker).

Everything is generated here: no image files are committed.
"""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from yolov4.core.images import ImageTooLarge, decode_image, image_files, images_under
from yolov4.core.jpeg import jpeg_damage
from yolov4.data.image_io import image_size, read_image
from yolov4.data.problems import Note, Problem, ProblemReport
from yolov4.errors import InputError

H, W = 48, 80  # stored (not displayed) size: a landscape image
ORIENTATION = 0x0112  # EXIF Orientation tag


def picture(h: int = H, w: int = W, seed: int = 0) -> np.ndarray:
    """A smooth RGB picture with a bright marker in one corner (orientation shows up)."""
    rng = np.random.default_rng(seed)
    image = cv2.GaussianBlur(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), (9, 9), 0)
    image[2:10, 2:14] = (250, 20, 20)  # top-left red bar
    return image


def encode(
    image: np.ndarray | Image.Image, fmt: str, orientation: int | None = None, **kw
) -> bytes:
    im = image if isinstance(image, Image.Image) else Image.fromarray(image)
    buf = io.BytesIO()
    if orientation is not None:
        exif = Image.Exif()
        exif[ORIENTATION] = orientation
        kw["exif"] = exif.tobytes()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def displayed(data: bytes) -> np.ndarray:
    """What a viewer shows: PIL's own EXIF transpose, as RGB."""
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))


def train_read(data: bytes, tmp_path: Path, name: str) -> tuple[np.ndarray | None, ProblemReport]:
    path = tmp_path / name
    path.write_bytes(data)
    report = ProblemReport(name="t")
    return read_image(path, report), report


LOSSLESS = {"PNG": {}, "WEBP": {"lossless": True}, "TIFF": {}}


@pytest.mark.parametrize("fmt", [*LOSSLESS, "JPEG"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_applied_for_every_format_by_both_readers(tmp_path, fmt, orientation):
    data = encode(picture(), fmt, orientation, **LOSSLESS.get(fmt, {"quality": 95}))
    want = displayed(data)
    assert want.shape[:2] == ((W, H) if orientation >= 5 else (H, W))
    served = decode_image(data)
    trained, report = train_read(data, tmp_path, f"x.{fmt.lower()}")
    assert not report.problems
    np.testing.assert_array_equal(served, trained)  # one decoder
    if fmt == "JPEG":  # lossy: PIL's and OpenCV's IDCT may differ by a level or two
        assert np.abs(served.astype(int) - want).max() <= 3
    else:
        np.testing.assert_array_equal(served, want)
    path = tmp_path / f"x.{fmt.lower()}"
    assert image_size(path) == want.shape[:2]  # header size agrees with the decoder


def test_rotated_png_in_a_dataset_keeps_its_labels(tmp_path):
    """A PNG stored landscape with EXIF orientation 6 (displayed portrait): its YOLO label,
    written for the displayed image, must land on the marker after decoding for training."""
    from yolov4.core.preprocess import PreprocessConfig
    from yolov4.data.dataset import DetectionDataset
    from yolov4.data.yolo_txt import load_yolo

    stored = np.full((H, W, 3), 40, np.uint8)
    stored[4:16, 50:70] = (255, 0, 0)  # red box in the stored frame
    data = encode(stored, "PNG", orientation=6)
    view = displayed(data)  # (W, H): the box is elsewhere once rotated
    ys, xs = np.nonzero(view[..., 0] > 200)
    x1, y1, x2, y2 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    vh, vw = view.shape[:2]
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(data)
    (tmp_path / "labels" / "a.txt").write_text(
        f"0 {(x1 + x2) / 2 / vw} {(y1 + y2) / 2 / vh} {(x2 - x1) / vw} {(y2 - y1) / vh}\n"
    )
    split = load_yolo(tmp_path / "images", ["box"])
    assert (split.records[0].height, split.records[0].width) == (vh, vw)
    ds = DetectionDataset(split, PreprocessConfig(input_size=(96, 96), mode="stretch"))
    sample = ds[0]
    assert not ds.report.problems  # no size mismatch: decoded in the displayed orientation
    bx1, by1, bx2, by2 = sample["boxes"][0].round().int().tolist()
    red = sample["image"][0] > 0.8 * 255  # samples are uint8 (the device scales them)
    assert red[by1 + 1 : by2 - 1, bx1 + 1 : bx2 - 1].all()  # the label fits the marker
    assert red.sum() <= (bx2 - bx1 + 2) * (by2 - by1 + 2)


def _jpeg(progressive: bool = False, seed: int = 0) -> bytes:
    return encode(picture(240, 320, seed), "JPEG", quality=90, progressive=progressive)


@pytest.mark.parametrize("progressive", [False, True])
def test_jpeg_with_data_after_its_end_marker_is_accepted(tmp_path, progressive):
    """Motion photos append a video (here: another JPEG, markers and all) after the EOI."""
    data = _jpeg(progressive)
    want = decode_image(data)
    for tail in (b"\0" * 3000, _jpeg(seed=1), b"ftypmp42" + bytes(range(256)) * 8):
        served = decode_image(data + tail)
        np.testing.assert_array_equal(served, want)
        trained, report = train_read(data + tail, tmp_path, "motion.jpg")
        assert not report.problems
        np.testing.assert_array_equal(trained, want)


@pytest.mark.parametrize("progressive", [False, True])
def test_jpeg_damage_names_what_libjpeg_repairs_without_a_trace(progressive):
    data = _jpeg(progressive)
    assert jpeg_damage(data) == [] and jpeg_damage(data + _jpeg(seed=1)) == []  # motion photo
    assert jpeg_damage(encode(picture(), "PNG")) == []
    sos = data.find(b"\xff\xda")
    extraneous = data[:sos] + b"\x01\x02" + data[sos:]
    np.testing.assert_array_equal(decode_image(extraneous), decode_image(data))  # no trace
    assert jpeg_damage(extraneous) == ["Corrupt JPEG data: 2 extraneous bytes before marker 0xda"]
    assert jpeg_damage(data[:-2])[0] == "no end-of-image marker (FFD9) after its image data"


def _cuts(data: bytes) -> dict[str, bytes]:
    """Truncated copies whose last KiB holds an end marker nonetheless."""
    half, late = len(data) // 2, len(data) - 300
    return {
        "half+eoi": data[:half] + b"\xff\xd9",
        "half+eoi+bytes": data[:half] + b"\xff\xd9" + bytes(range(200)),
        "late+eoi": data[:late] + b"\xff\xd9",
        "half+padding+eoi": data[:half] + b"\0" * 500 + b"\xff\xd9",
        "half": data[:half],
    }


def test_progressive_jpeg_cut_between_scans_is_truncated():
    """Every scan present is complete, but the later ones (and the end marker) are missing."""
    data = _jpeg(progressive=True)
    sos = [i for i in range(len(data) - 1) if data[i : i + 2] == b"\xff\xda"]
    assert len(sos) > 3
    cut = data[: sos[3] - 10]  # inside the headers before the fourth scan
    with pytest.raises(InputError, match="truncated JPEG"):
        decode_image(cut)


@pytest.mark.parametrize("progressive", [False, True])
def test_truncated_jpeg_is_found_by_decoding_even_with_an_end_marker(tmp_path, progressive):
    data = _jpeg(progressive)
    for name, cut in _cuts(data).items():
        assert b"\xff\xd9" in cut[-1024:] or name == "half"
        with pytest.raises(InputError, match="truncated JPEG"):
            decode_image(cut, "upload")
        image, report = train_read(cut, tmp_path, f"{name}.jpg")
        assert list(report.problems) == [Problem.TRUNCATED], name
        assert image is not None and image.shape == (240, 320, 3)  # what was there, repaired


@pytest.mark.parametrize("byteorder", ["<", ">"])
def test_16_bit_tiff_of_either_byte_order_decodes(tmp_path, byteorder):
    values = (np.arange(H * W, dtype=np.uint32).reshape(H, W) * 977 % 65536).astype(np.uint16)
    im = Image.fromarray(values.astype(f"{byteorder}u2"))
    assert im.mode == ("I;16B" if byteorder == ">" else "I;16")
    data = encode(im, "TIFF")
    assert data[:2] == (b"MM" if byteorder == ">" else b"II")
    served = decode_image(data)
    want = np.repeat((values >> 8).astype(np.uint8)[..., None], 3, axis=2)  # the high byte
    np.testing.assert_array_equal(served, want)
    trained, report = train_read(data, tmp_path, "deep.tif")
    np.testing.assert_array_equal(trained, want)
    assert list(report.problems) == [Problem.CONVERTED]


def _layouts() -> dict[str, tuple[bytes, np.ndarray]]:
    """Encoded images of every layout -> (bytes, the RGB uint8 image they hold)."""
    rgb = picture()
    gray = rgb[..., 1].copy()
    deep = (rgb.astype(np.uint16) << 8) | 0x7F  # the high byte is rgb
    rgba = np.dstack([rgb, np.full((H, W), 7, np.uint8)])
    pal = Image.fromarray(rgb).quantize(16)
    out = {
        "gray.png": (encode(gray, "PNG"), np.dstack([gray] * 3)),
        "gray16.png": (
            encode(Image.fromarray(gray.astype(np.uint16) * 257), "PNG"),
            np.dstack([gray] * 3),
        ),
        "rgba.png": (encode(rgba, "PNG"), rgb),
        "la.png": (encode(Image.fromarray(gray).convert("LA"), "PNG"), np.dstack([gray] * 3)),
        "palette.png": (encode(pal, "PNG"), np.asarray(pal.convert("RGB"))),
        "deep.png": (cv2.imencode(".png", deep[..., ::-1])[1].tobytes(), rgb),
        "deep.tif": (cv2.imencode(".tiff", deep[..., ::-1])[1].tobytes(), rgb),
        "float.tif": (encode(Image.fromarray(gray.astype(np.float32) / 255), "TIFF"), None),
        "cmyk.tif": (encode(Image.fromarray(rgb).convert("CMYK"), "TIFF"), None),
        "rgba.webp": (encode(rgba, "WEBP", lossless=True), rgb),
        "bmp.bmp": (encode(rgb, "BMP"), rgb),
    }
    return out


@pytest.mark.parametrize("name", list(_layouts()))
def test_every_layout_is_converted_one_way_by_both_readers(tmp_path, name):
    data, want = _layouts()[name]
    served = decode_image(data)
    assert served.shape == (H, W, 3) and served.dtype == np.uint8
    trained, report = train_read(data, tmp_path, name)
    np.testing.assert_array_equal(served, trained)
    if want is not None:
        np.testing.assert_array_equal(served, want)
    notes = {  # 8-bit files read as darknet and ultralytics read them: notes, not problems
        "gray.png": Note.GRAYSCALE,
        "palette.png": Note.PALETTE,
        **dict.fromkeys(("rgba.png", "la.png", "rgba.webp"), Note.ALPHA),
    }
    plain = ("bmp.bmp", *notes)
    assert list(report.problems) == ([] if name in plain else [Problem.CONVERTED])
    assert list(report.notes) == ([notes[name]] if name in notes else [])


def test_float_cmyk_and_gray_jpeg_values():
    gray = picture()[..., 1]
    f = decode_image(_layouts()["float.tif"][0])
    assert np.abs(f.astype(int) - gray[..., None]).max() <= 1
    cmyk = Image.fromarray(picture()).convert("CMYK")
    np.testing.assert_array_equal(
        decode_image(_layouts()["cmyk.tif"][0]), np.asarray(cmyk.convert("RGB"))
    )
    jpeg = decode_image(encode(cmyk, "JPEG", quality=95))  # Adobe CMYK JPEG
    assert np.abs(jpeg.astype(int) - picture()).mean() < 6
    g = decode_image(encode(gray, "JPEG", quality=95))
    assert (g[..., 0] == g[..., 2]).all() and np.abs(g[..., 0].astype(int) - gray).mean() < 3


def test_bad_bytes_and_the_pixel_limit_before_decoding(tmp_path):
    with pytest.raises(InputError, match="not an image"):
        decode_image(b"definitely not an image", "x")
    big = encode(np.zeros((400, 500, 3), np.uint8), "PNG")
    with pytest.raises(ImageTooLarge, match=r"500x400 = 200,000 pixels is over the limit of 1,000"):
        decode_image(big, "up", max_pixels=1000)
    # a 20000x20000 PNG header (a decompression bomb): over Pillow's own limit, which it checks
    # when it opens the file; named with this call's limit, not Pillow's
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b""))
    with pytest.raises(
        ImageTooLarge, match=r"up: 400,000,000 pixels is over the limit of 50,000,000$"
    ):
        decode_image(bomb, "up", max_pixels=50_000_000)
    png = encode(picture(), "PNG")
    for cut in (png[: len(png) // 2], png[:60]):
        with pytest.raises(InputError, match="up: "):
            decode_image(cut, "up")
        image, report = train_read(cut, tmp_path, "cut.png")
        assert image is None and set(report.problems) <= {Problem.TRUNCATED, Problem.UNREADABLE}


def test_an_image_over_pillows_warning_size_is_refused_in_one_line(recwarn):
    """90M pixels: Pillow's DecompressionBombWarning printed before the project's own refusal."""
    buf = io.BytesIO()
    Image.new("1", (10_000, 9_000)).save(buf, "PNG")  # 1-bit: 11 MB in memory, tiny as a PNG
    with pytest.raises(ImageTooLarge, match=r"90,000,000 pixels"):
        decode_image(buf.getvalue(), "big.png", max_pixels=1_000_000)
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]


def test_images_under_is_recursive_by_suffix_sorted_as_every_folder_reader_lists(tmp_path):
    """One list for a folder of images, whoever reads it: predict.py's folder, export's
    calibration folder (a name with ``-`` beside a folder of its stem sorts as paths do)."""
    from yolov4.cli.sources import image_folder
    from yolov4.training.predict import list_images

    root, outside = tmp_path / "root", tmp_path / "outside"
    wanted = [root / "a" / "b.jpg", root / "a" / "c" / "d.jpeg", root / "a-b" / "x.PNG",
              root / "linked" / "e.jpg", root / "top.webp"]  # fmt: skip
    for path in [*wanted[:3], wanted[4], root / "notes.txt", root / "a" / "b.txt"]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    outside.mkdir()
    (outside / "e.jpg").write_bytes(b"")
    (root / "linked").symlink_to(outside, target_is_directory=True)
    assert images_under(root) == wanted
    assert image_files(reversed(wanted + [root / "notes.txt"])) == wanted
    assert [Path(f) for _, f in list_images(root)] == wanted
    assert image_folder(root) == wanted
