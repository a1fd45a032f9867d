"""The Predictor's input handling and coordinate mapping, with an oracle in place of a network.

The oracle "detects" the red pixels of the preprocessed input (its bounding box), so whatever
the Predictor reports in original pixels can be compared with where the red square was drawn:
a wrong colour order, resize, letterbox offset or unmapping shows up as a wrong or missing box.
"""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from yolov4.core.preprocess import PreprocessConfig
from yolov4.errors import InputError
from yolov4.inference import Predictor


def oracle(images: torch.Tensor) -> torch.Tensor:
    """``(B, 3, H, W)`` -> ``(B, 1, 6)``: the box around red pixels (R > .5, G < .3, B < .3)."""
    out = torch.zeros(images.shape[0], 1, 6)
    for i, im in enumerate(images):
        ys, xs = torch.nonzero((im[0] > 0.5) & (im[1] < 0.3) & (im[2] < 0.3), as_tuple=True)
        if len(xs):
            x1, x2, y1, y2 = (
                xs.min().item(),
                xs.max().item() + 1,
                ys.min().item(),
                ys.max().item() + 1,
            )
            out[i, 0] = torch.tensor([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1, 1.0, 1.0])
    return out


def predictor(mode: str = "letterbox", size=(96, 128)) -> Predictor:
    return Predictor(oracle, ["square"], PreprocessConfig(input_size=size, mode=mode))


SQUARE = (37, 21, 151, 70)  # x1, y1, x2, y2 in the original image


def scene(h: int = 97, w: int = 203) -> np.ndarray:
    image = np.zeros((h, w, 3), np.uint8)
    x1, y1, x2, y2 = SQUARE
    image[y1:y2, x1:x2] = (255, 0, 0)
    return image


def assert_found(dets, tol: float = 2.5) -> None:
    assert len(dets) == 1 and dets.class_names == ["square"]
    np.testing.assert_allclose(dets.boxes[0], SQUARE, atol=tol)


def encode(image_rgb: np.ndarray, ext: str) -> bytes:
    ok, buf = cv2.imencode(ext, np.ascontiguousarray(image_rgb[..., ::-1]))
    assert ok
    return buf.tobytes()


@pytest.mark.parametrize("mode", ["letterbox", "stretch"])
def test_every_input_kind_maps_back_to_the_original_pixels(tmp_path, mode):
    rgb = scene()
    path = tmp_path / "scene.png"
    path.write_bytes(encode(rgb, ".png"))
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], 2)
    inputs = [
        rgb,  # numpy RGB, odd non-square size
        str(path),  # a file
        encode(rgb, ".png"),  # encoded bytes
        Image.fromarray(rgb),  # PIL
        torch.from_numpy(rgb).permute(2, 0, 1).contiguous(),  # torch CHW uint8
        torch.from_numpy(rgb).permute(2, 0, 1).float() / 255,  # torch CHW float [0, 1]
        rgba,  # RGBA, alpha dropped
        rgb.astype(np.uint16) * 257,  # 16-bit
    ]
    results = predictor(mode)(inputs, conf=0.5)
    for i, dets in enumerate(results):
        assert dets.image_size == (97, 203), i
        assert_found(dets)


def test_bgr_arrays_with_color_bgr():
    bgr = np.ascontiguousarray(scene()[..., ::-1])
    assert_found(predictor()(bgr, conf=0.5, color="bgr")[0])
    assert len(predictor()(bgr, conf=0.5)[0]) == 0  # read as RGB the square is blue: not found


def test_grayscale_and_mixed_sizes():
    gray = np.zeros((120, 61), np.uint8)
    gray[10:50, 5:40] = 255  # white: R > .5 but G too, so the oracle ignores it
    small = scene(80, 160)
    big = cv2.resize(scene(), (406, 194), interpolation=cv2.INTER_NEAREST)  # 2x
    out = predictor()([gray, small, big], conf=0.5)
    assert out[0].image_size == (120, 61) and len(out[0]) == 0
    assert out[1].image_size == (80, 160)
    assert_found(out[1])
    np.testing.assert_allclose(out[2].boxes[0], np.array(SQUARE) * 2, atol=4.0)
    out[0].timing_ms["model"] = -1.0  # one dict per image (it was one shared by the batch)
    assert out[1].timing_ms["model"] >= 0 and out[1].timing_ms == out[2].timing_ms


def test_exif_rotated_jpeg_gives_boxes_in_the_displayed_orientation():
    rgb = scene()
    stored = np.ascontiguousarray(np.rot90(rgb, k=1))  # stored rotated; EXIF says rotate back
    im = Image.fromarray(stored)
    exif = im.getexif()
    exif[0x0112] = 6  # orientation 6: the viewer rotates 90 degrees clockwise
    buf = io.BytesIO()
    im.save(buf, "JPEG", exif=exif, quality=95)
    dets = predictor()(buf.getvalue(), conf=0.5)[0]
    assert dets.image_size == (97, 203)
    assert_found(dets, tol=3.0)


def test_to_dict_and_empty_results():
    dets = predictor()(np.zeros((50, 70, 3), np.uint8))[0]
    assert len(dets) == 0 and dets.boxes.shape == (0, 4)
    assert dets.to_dict() == {"detections": [], "image": {"width": 70, "height": 50}}
    found = predictor()(scene(), conf=0.5)[0].to_dict()
    assert found["detections"][0]["class_name"] == "square" and found["image"] == {
        "width": 203,
        "height": 97,
    }
    # boxes to 3 decimals, as detections.json (COCO results): mAP from either file is the same
    d = predictor()(scene(), conf=0.5)[0]
    box = found["detections"][0]["box"]
    assert box == [round(float(v), 3) for v in d.boxes[0]] and box != [
        round(float(v), 2) for v in d.boxes[0]
    ]


@pytest.mark.parametrize(
    "images, match",
    [
        (
            [scene(), np.zeros((2, 2, 2, 2), np.uint8)],
            r"image 1: expected an \(H, W, 3\) image, got an array of shape \(2, 2, 2, 2\)",
        ),
        (np.array(5), r"image 0: expected an \(H, W, 3\) image, got an array of shape \(\)"),
        ((x for x in [scene()]), r"got a generator \(an iterator is read once: pass list"),
        (np.zeros((10, 10, 2), np.uint8), r"image 0: expected 1, 3 or 4 channels"),
        (np.zeros((10, 10, 5), np.uint8), r"image 0: expected 1, 3 or 4 channels"),
        (
            np.zeros((3, 100, 4), np.uint8),  # (C, H, W) with W = 4, or a 3x100 RGBA image
            r"image 0: an array of shape \(3, 100, 4\) is ambiguous: numpy images are \(H, W, C\)",
        ),
        (
            np.zeros((3, 64, 48), np.uint8),
            r"got shape \(3, 64, 48\), which looks like \(C, H, W\): pass array.transpose\(1, 2, 0\)",
        ),
        (
            np.full((10, 10, 3), 2.0, np.float32),
            r"image 0: float images must hold values in \[0, 1\], got range \[2, 2\]",
        ),
        (
            torch.full((3, 8, 8), float("nan")),
            r"image 0: float images must hold values in \[0, 1\], got 192 NaN values \(of 192\)",
        ),
        (
            np.where(np.eye(6, dtype=bool)[..., None], np.inf, np.nan).astype(np.float32),
            r"image 0: float images must hold values in \[0, 1\], got 30 NaN values and 6 "
            r"infinite values \(of 36\)",
        ),
        (np.zeros((0, 10, 3), np.uint8), r"image 0: expected an \(H, W, 3\) image"),
        (
            np.zeros((8, 8, 3), np.int64),
            r"image 0: unsupported dtype int64; expected uint8, uint16 or float in \[0, 1\]",
        ),
        (
            np.ones((8, 8), bool),
            r"image 0: unsupported dtype bool \(a mask\?\); expected uint8, uint16 or float",
        ),
        (
            torch.ones(1, 8, 8, dtype=torch.bool),
            r"image 0: unsupported dtype bool \(a mask\?\); expected uint8, uint16 or float",
        ),
        ([scene(), b"definitely not an image"], r"image 1: 23 bytes that are not an image"),
        (b"", r"image 0: empty image data"),
        ("/no/such/file.jpg", r"image 0: file '/no/such/file.jpg' does not exist"),
        (  # not "file 'http:/example.com/a.jpg' does not exist": the URL mangled as a path
            [scene(), "http://example.com/a.jpg"],
            r"image 1: 'http://example.com/a.jpg' is a URL; the Predictor takes image files, .*"
            r"not URLs \(predict.py source= fetches image URLs",
        ),
        ([], r"expected at least one image"),
        (
            torch.zeros(5, 8, 8),
            r"image 0: expected a \(C, H, W\) tensor with C = 1, 3 or 4 \(grayscale, RGB, RGBA\) "
            r"or an \(H, W\) tensor, got shape \(5, 8, 8\)",
        ),
        ({"image": 1}, r"image 0: unsupported input type dict"),
        (torch.zeros(3, 8, 8, device="meta"), r"image 0: a meta-device tensor holds no pixels"),
        (Path(__file__).parent, r"image 0: '.*inference' is a folder; the Predictor takes"),
        (Path(__file__), None),  # replaced by a video file in the test
    ],
)
@pytest.mark.filterwarnings("error::RuntimeWarning")  # numpy's "All-NaN slice" and the like
def test_bad_inputs_raise_before_the_model_runs(images, match, tmp_path):
    if match is None:
        images = tmp_path / "clip.MP4"
        images.write_bytes(b"\x00\x00\x00\x18ftypmp42")
        match = r"image 0: '.*clip.MP4' is a video; the Predictor takes images \(predict.py"
    calls = []

    def spy(x):
        calls.append(x)
        return oracle(x)

    with pytest.raises(InputError, match=match):
        Predictor(spy, ["square"], PreprocessConfig(input_size=(64, 64)))(images)
    assert calls == []


def test_a_pil_image_of_mode_i_is_8_bit_when_its_values_fit():
    from yolov4.inference.images import load_image

    gray = np.arange(48 * 64, dtype=np.int32).reshape(48, 64) % 256
    assert Image.fromarray(gray).mode == "I"
    np.testing.assert_array_equal(load_image(Image.fromarray(gray))[..., 1], gray)
    deep = Image.fromarray(gray * 256 + 255)  # 16-bit values: their high byte
    np.testing.assert_array_equal(load_image(deep)[..., 1], gray)
    assert load_image(np.zeros((100, 4, 3), np.uint8)).shape == (100, 4, 3)  # unambiguous
    assert load_image(torch.zeros(3, 4, 4, dtype=torch.uint8)).shape == (4, 4, 3)


def test_truncated_jpeg_and_bad_thresholds():
    data = encode(scene(), ".jpg")
    with pytest.raises(InputError, match="truncated JPEG"):
        predictor()(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"conf must be a number in \[0, 1\], got 1.5"):
        predictor()(scene(), conf=1.5)
    with pytest.raises(InputError, match=r"classes \[3\] out of range"):
        predictor()(scene(), classes=[3])


def test_class_filter_comes_before_max_det():
    """A frame full of confident class-0 boxes must not crowd out the class-1 box asked for."""

    def crowd(images: torch.Tensor) -> torch.Tensor:
        rows = [[8.0 + 6 * i, 8.0, 4.0, 4.0, 0.99, 0.99, 0.0] for i in range(10)]
        rows.append([64.0, 48.0, 20.0, 20.0, 0.6, 0.0, 0.9])  # the one class-1 box, lower score
        return torch.tensor(rows).expand(images.shape[0], -1, -1)

    p = Predictor(crowd, ["car", "person"], PreprocessConfig(input_size=(96, 128)))
    assert p(scene(96, 128), max_det=3)[0].class_names == ["car"] * 3
    (dets,) = p(scene(96, 128), max_det=3, classes=[1])
    assert dets.class_names == ["person"]
    np.testing.assert_allclose(dets.boxes[0], [54, 38, 74, 58], atol=1e-4)


def test_classes_by_name_id_or_both():
    """Names and ids pick the same classes, mixed or alone; one name may be given bare."""

    def three(images: torch.Tensor) -> torch.Tensor:  # one box of each class, apart
        rows = [[20.0 + 40 * c, 40.0, 10.0, 10.0, 0.9] + [0.9 * (k == c) for k in range(3)]
                for c in range(3)]  # fmt: skip
        return torch.tensor(rows).expand(images.shape[0], -1, -1)

    p = Predictor(three, ["car", "person", "dog"], PreprocessConfig(input_size=(96, 128)))
    image = scene(96, 128)
    by_id = p(image, classes=[0, 2])[0]
    assert sorted(by_id.class_names) == ["car", "dog"]
    for classes in (["car", "dog"], ["dog", 0], [np.int64(2), "car"]):
        dets = p(image, classes=classes)[0]
        assert sorted(dets.class_names) == ["car", "dog"], classes
        np.testing.assert_array_equal(np.sort(dets.boxes, 0), np.sort(by_id.boxes, 0))
    assert p(image, classes="person")[0].class_names == ["person"]
    assert p(image, classes=1)[0].class_names == ["person"]
    # integer arrays and tensors are ids, as lists are (a 0-d one: one id)
    for classes in (
        np.array([0, 2]),
        torch.tensor([0, 2]),
        torch.tensor([2, 0], dtype=torch.int32),
    ):
        assert sorted(p(image, classes=classes)[0].class_names) == ["car", "dog"], classes
    assert p(image, classes=torch.tensor(1))[0].class_names == ["person"]
    with pytest.raises(InputError, match=r"integer Tensor .* got dtype torch.float32"):
        p(image, classes=torch.tensor([0.0, 2.0]))


@pytest.mark.parametrize(
    "empty", [[], (), np.array([], np.int64), torch.tensor([], dtype=torch.long)]
)
def test_an_empty_classes_list_is_refused_not_an_empty_answer(empty):
    """classes=[] kept no class: every image came back with no detections, which reads as
    "nothing found"."""
    with pytest.raises(InputError, match=r"classes: got an empty list, which would keep no class"):
        predictor()(scene(), classes=empty)


def test_an_unknown_class_name_lists_the_valid_ones_briefly():
    names = [f"class{i}" for i in range(80)]
    p = Predictor(oracle, names, PreprocessConfig(input_size=(64, 64)))
    with pytest.raises(InputError) as e:
        p(scene(), classes=["class3", "persn"])
    message = str(e.value)
    assert "'persn'" in message and "class0, class1" in message and "class9" in message
    assert "class10" not in message and "80 names" in message
    with pytest.raises(InputError, match=r"classes \[80\] out of range"):
        p(scene(), classes=["class3", 80])
    with pytest.raises(InputError, match="expected class ids .* or names .*, got 1.5"):
        p(scene(), classes=[1.5])
    with pytest.raises(InputError, match="got True"):
        p(scene(), classes=[True])


def test_prepare_then_predict_prepared_gives_the_calls_detections():
    """The split predict.py uses to preprocess on its reader thread: same detections, and the
    postprocess options checked on the second step."""
    p = predictor()
    images = [scene(), scene(64, 64)]
    prepared = p.prepare(images)
    assert [hw for _, _, hw in prepared] == [(97, 203), (64, 64)]
    got, want = p.predict_prepared(prepared, conf=0.3), p(images, conf=0.3)
    assert_found(got[0])
    assert [d.to_dict() for d in got] == [d.to_dict() for d in want]
    with pytest.raises(InputError, match="conf"):
        p.predict_prepared(prepared, conf=2.0)
    with pytest.raises(InputError, match="at least one image"):
        p.predict_prepared([])


def test_numpy_numbers_bf16_tensors_and_a_bad_classes_type():
    p = predictor()
    image = scene()
    want = p(image, conf=0.5, max_det=5)[0].to_dict()
    assert p(image, conf=np.float32(0.5), max_det=np.int64(5))[0].to_dict() == want
    chw = torch.from_numpy(image).permute(2, 0, 1).float().div(255)
    [dets] = p(chw.to(torch.bfloat16), conf=0.5)  # bf16 values in [0, 1], as a float tensor
    assert len(dets) == len(p(chw.to(torch.bfloat16).float(), conf=0.5)[0]) > 0
    with pytest.raises(InputError, match="classes: expected a class id, a name, or a list"):
        p(image, classes=1.0)


def test_postprocess_as_a_dict_is_over_the_predictors_own():
    p = predictor()
    want = p(scene(), postprocess=p.postprocess.replace(conf=0.6, max_det=3))[0].to_dict()
    assert p(scene(), postprocess={"conf": 0.6, "max_det": 3})[0].to_dict() == want
    with pytest.raises(InputError, match="unknown postprocess key"):
        p(scene(), postprocess={"confidence": 0.6})
    with pytest.raises(InputError, match="expected a PostprocessConfig or a dict"):
        p(scene(), postprocess=0.5)


def test_a_loaded_checkpoint_given_to_the_predictor_keeps_its_model_unfused(tmp_path):
    """from_checkpoint(path) fuses the network it loads; a Checkpoint the caller holds keeps
    its BN layers (the Predictor fuses a copy) unless inplace=True."""
    from yolov4 import build_model, load_checkpoint, save_checkpoint

    model = build_model("yolov4-tiny", num_classes=1)
    path = save_checkpoint(tmp_path / "m.pt", model, ["square"], {"input_size": [64, 64]})
    for source in (path, load_checkpoint(path)):
        served = Predictor.from_checkpoint(source).backend.model.model
        assert served.is_fused
    assert (
        not source.model.is_fused and source.model.state_dict().keys() == model.state_dict().keys()
    )
    served = Predictor.from_checkpoint(source, inplace=True).backend.model.model
    assert served is source.model and served.is_fused  # the caller gives its model away


@pytest.mark.parametrize(("cfg_letter_box", "mode"), [(False, "letterbox"), (True, "stretch")])
def test_a_checkpoints_predictor_describes_its_model_as_an_export_of_it_does(
    tmp_path, cfg_letter_box, mode
):
    """A network whose cfg says one resize (``[net] letter_box``) and input size (416), trained
    with the other resize at 64x96: the Predictor's ``metadata["model"]`` (what ``GET /v1/model``
    and evaluate.py read) is the network as it runs, the same entry as its export's."""
    from yolov4 import build_model, save_checkpoint
    from yolov4.core.artifact import read_metadata
    from yolov4.export import export_artifact

    model = build_model("yolov4-tiny", num_classes=1, letter_box=cfg_letter_box)
    assert tuple(model.config.input_size) == (416, 416)
    preprocess = {"input_size": [64, 96], "mode": mode}
    path = save_checkpoint(tmp_path / "m.pt", model, ["square"], preprocess)
    described = Predictor.from_checkpoint(path).metadata["model"]
    exported = read_metadata(export_artifact(path, tmp_path / "export", formats=["torchscript"]))
    assert described == exported["model"]
    assert described["letter_box"] is (mode == "letterbox")
    assert list(described["input_size"]) == [64, 96]
