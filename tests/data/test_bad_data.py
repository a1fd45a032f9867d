"""A directory seeded with each kind of bad file: the default run repairs or skips and reports
each one with its file name; the strict run raises a DatasetError naming the file."""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from yolov4.cli.check_data import main as check_main
from yolov4.core.preprocess import PreprocessConfig
from yolov4.data.coco import load_coco
from yolov4.data.dataset import DetectionDataset
from yolov4.data.image_io import read_image
from yolov4.data.problems import Note, Problem, ProblemReport
from yolov4.data.transforms import AugmentConfig
from yolov4.data.yolo_txt import load_yolo
from yolov4.errors import DatasetError

H, W = 24, 32
BOX = [4.0, 4.0, 10.0, 8.0]  # COCO xywh of a good box


def _jpeg(path: Path, exif_orientation: int | None = None) -> None:
    im = Image.fromarray(np.full((H, W, 3), 90, np.uint8))
    buf = io.BytesIO()
    if exif_orientation is None:
        im.save(buf, "JPEG")
    else:
        exif = im.getexif()
        exif[0x0112] = exif_orientation
        im.save(buf, "JPEG", exif=exif.tobytes())
    path.write_bytes(buf.getvalue())


# file name -> (how to write it, expected problem kind or None, extra annotation boxes)
def _write_images(d: Path) -> None:
    _jpeg(d / "good.jpg")
    (d / "unreadable.jpg").write_bytes(b"this is not an image")
    _jpeg(d / "truncated.jpg")
    raw = (d / "truncated.jpg").read_bytes()
    (d / "truncated.jpg").write_bytes(raw[: len(raw) // 2])
    jpeg = (d / "good.jpg").read_bytes()
    sos = jpeg.find(b"\xff\xda")
    # libjpeg: "Corrupt JPEG data: 3 extraneous bytes before marker 0xda"
    (d / "extraneous.jpg").write_bytes(jpeg[:sos] + b"\x12\x34\x56" + jpeg[sos:])
    # libjpeg: "Corrupt JPEG data: 95 extraneous bytes before marker 0xd9"
    (d / "junk_before_end.jpg").write_bytes(jpeg[:-2] + bytes(range(1, 101)) + jpeg[-2:])
    (d / "no_end_marker.jpg").write_bytes(jpeg[:-2])  # image data complete, no FFD9
    cv2.imwrite(str(d / "gray.png"), np.full((H, W), 50, np.uint8))
    cv2.imwrite(str(d / "rgba.png"), np.full((H, W, 4), 50, np.uint8))
    Image.fromarray(np.full((H, W, 3), 50, np.uint8)).quantize(4).save(d / "palette.png")
    cv2.imwrite(str(d / "deep.png"), np.full((H, W, 3), 5000, np.uint16))
    _jpeg(d / "exif.jpg", exif_orientation=6)  # decodes rotated to W x H
    # a float TIFF holding 0..255 (an image holds 0..1): the Predictor's InputError stopped runs
    Image.fromarray(np.full((H, W), 128.0, np.float32), mode="F").save(d / "float.tif")


DECODE_PROBLEMS = {
    "unreadable.jpg": Problem.UNREADABLE,
    "truncated.jpg": Problem.TRUNCATED,
    "extraneous.jpg": Problem.DAMAGED_JPEG,
    "junk_before_end.jpg": Problem.DAMAGED_JPEG,
    "no_end_marker.jpg": Problem.DAMAGED_JPEG,
    "deep.png": Problem.CONVERTED,
    "exif.jpg": Problem.STORED_FRAME,  # annotated H x W, stored H x W, displayed W x H
    "float.tif": Problem.UNREADABLE,
}
# read as darknet and ultralytics read them: counted, not a problem (strict mode takes them)
DECODE_NOTES = {"gray.png": Note.GRAYSCALE, "rgba.png": Note.ALPHA, "palette.png": Note.PALETTE}
ANNOTATION_PROBLEMS = {  # bbox (xywh) on good.jpg -> kind
    Problem.BOX_CLIPPED: [20.0, 10.0, 30.0, 5.0],
    Problem.BOX_OUTSIDE: [100.0, 100.0, 5.0, 5.0],
    Problem.BOX_EMPTY: [5.0, 5.0, 0.0, 3.0],
    Problem.BOX_TINY: [5.0, 5.0, 0.3, 3.0],  # a 0.3-px box: an anchor fit's outlier
    Problem.BOX_NAN: [float("nan"), 1.0, 2.0, 2.0],
}


def make_bad_coco(root: Path) -> Path:
    images = root / "images"
    images.mkdir(parents=True)
    _write_images(images)
    names = ["good.jpg", "missing.jpg", *DECODE_PROBLEMS, *DECODE_NOTES]
    dataset = {
        "images": [
            {"id": i + 1, "file_name": n, "height": H, "width": W} for i, n in enumerate(names)
        ],
        "annotations": [],
        "categories": [{"id": 2, "name": "thing"}],
    }
    boxes = [(1, 2, BOX)] + [(i + 1, 2, BOX) for i in range(2, len(names))]
    boxes += [(1, 2, b) for b in ANNOTATION_PROBLEMS.values()] + [(1, 99, BOX)]  # 99: unknown id
    for image_id, cat, box in boxes:
        dataset["annotations"].append(
            {
                "id": len(dataset["annotations"]) + 1,
                "image_id": image_id,
                "category_id": cat,
                "bbox": box,
                "area": 1.0,
                "iscrowd": 0,
            }
        )
    (root / "annotations.json").write_text(
        json.dumps(dataset)
    )  # NaN written as NaN, as Python does
    return root


def _kinds(report: ProblemReport) -> dict[str, list[str]]:
    return {k: v for k, v in report.problems.items()}


def test_default_mode_repairs_or_skips_and_reports_each_file(tmp_path: Path):
    root = make_bad_coco(tmp_path)
    report = ProblemReport(name="bad")
    data = load_coco(root / "annotations.json", root / "images", report=report)
    kinds = _kinds(report)
    assert any("missing.jpg" in f for f in kinds[Problem.MISSING_FILE])
    assert any("category_id 99" in f for f in kinds[Problem.UNKNOWN_CLASS])
    for kind in ANNOTATION_PROBLEMS:
        assert any("good.jpg" in f for f in kinds[kind]), kind
    good = next(r for r in data.records if r.file.endswith("good.jpg"))
    np.testing.assert_allclose(
        good.boxes, [[4, 4, 14, 12], [20, 10, W, 15]]
    )  # the clipped one kept
    assert len(data.records) == 1 + len(DECODE_PROBLEMS) + len(DECODE_NOTES)  # one missing

    # decoding: each bad image is reported once with its name; iterating never raises
    for augment in (None, AugmentConfig()):
        ds = DetectionDataset(data, PreprocessConfig(input_size=(64, 64)), augment, name="bad")
        for _ in range(2):  # a second epoch does not report again
            for i in range(len(ds)):
                sample = ds[i]
                assert sample["image"].shape == (3, 64, 64)
                assert (
                    sample["boxes"].shape[1:] == (4,)
                    and sample["labels"].dtype.is_floating_point is False
                )
        for file, kind in DECODE_PROBLEMS.items():
            assert sum(file in f for f in ds.report.problems[kind]) == 1, (file, kind)
            entry = next(f for f in ds.report.problems[kind] if file in f)
            assert entry.count(file) == 1, entry  # "<path>: truncated JPEG ...", named once
        for file, kind in DECODE_NOTES.items():
            [noted] = [f for f in ds.report.notes[kind] if file in f]
            assert noted.startswith(f"{root / 'images' / file}: PNG file"), noted
            assert not any(file in f for items in ds.report.problems.values() for f in items)
    text = report.summary()
    assert "missing.jpg" in text and "problem(s)" in text


def test_damaged_jpegs_are_decoded_and_reported_in_libjpegs_words(tmp_path: Path):
    """Damage libjpeg repairs while decoding (its warnings, a missing end marker): the image
    is used as decoded, and reported once checked."""
    _write_images(tmp_path)
    report = ProblemReport()
    assert read_image(tmp_path / "good.jpg", report, check=True) is not None
    assert not report.problems
    for name, words in (
        ("extraneous.jpg", "Corrupt JPEG data: 3 extraneous bytes before marker 0xda"),
        ("junk_before_end.jpg", "extraneous bytes before marker 0xd9"),
        ("no_end_marker.jpg", "no end-of-image marker (FFD9)"),
    ):
        image = read_image(tmp_path / name, report, check=False)
        assert image.shape == (H, W, 3) and abs(float(image.mean()) - 90) < 2, name
        assert not report.problems  # not checked: nothing said
        assert read_image(tmp_path / name, report, check=True) is not None
        [detail] = report.problems.pop(Problem.DAMAGED_JPEG)
        assert detail.startswith(str(tmp_path / name)) and words in detail, detail


@pytest.mark.parametrize("workers", [0, 2])
def test_damage_is_looked_for_once_per_image_though_workers_restart(tmp_path, monkeypatch, workers):
    """With persistent_workers=false each epoch's new DataLoader workers decoded every JPEG
    once more to look for damage, and reported each damaged one again."""
    import os

    import yolov4.data.image_io as image_io
    from yolov4.data.collate import DetectionCollate

    root = make_bad_coco(tmp_path)
    data = load_coco(root / "annotations.json", root / "images", report=ProblemReport())
    log = tmp_path / "calls.txt"  # appended to by every worker process

    def note(line: str) -> None:
        with log.open("a") as f:
            f.write(f"{line}\n")

    real_damage, real_add = image_io.jpeg_damage, ProblemReport.add
    monkeypatch.setattr(image_io, "jpeg_damage", lambda data: note("check") or real_damage(data))

    def add(self, kind, file, detail=""):
        if kind == Problem.DAMAGED_JPEG:
            note(f"report {os.getpid()} {Path(file).name}")
        real_add(self, kind, file, detail)

    monkeypatch.setattr(ProblemReport, "add", add)
    ds = DetectionDataset(data, PreprocessConfig(input_size=(64, 64)), None, name="bad")
    context = "fork" if workers else None  # the patches above reach the workers
    loader = torch.utils.data.DataLoader(
        ds, batch_size=3, num_workers=workers, persistent_workers=False,
        multiprocessing_context=context, collate_fn=DetectionCollate(),
    )  # fmt: skip
    for _ in range(2):  # epochs
        assert sum(len(batch["image_ids"]) for batch in loader) == len(data.records)
    lines = log.read_text().splitlines()
    reports = [line.split()[2] for line in lines if line.startswith("report")]
    damaged = sorted(f for f, kind in DECODE_PROBLEMS.items() if kind == Problem.DAMAGED_JPEG)
    assert sorted(reports) == damaged  # one report each, over both epochs
    decoded_jpegs = ["good.jpg", "exif.jpg", *damaged]  # truncated.jpg fails first: no check
    assert lines.count("check") == len(decoded_jpegs)
    pids = {int(line.split()[1]) for line in lines if line.startswith("report")}
    assert (os.getpid() not in pids) if workers else (pids == {os.getpid()})  # where they ran


@pytest.mark.parametrize("augment", [None, AugmentConfig(mosaic=0.5)])
@pytest.mark.parametrize("workers", [0, 2])
def test_each_image_is_reported_once_and_known_unreadable_or_stored_though_workers_restart(
    tmp_path, monkeypatch, workers, augment
):
    """With persistent_workers=false each epoch's new DataLoader workers reported every
    truncated, converted, resized, stored-frame and unreadable image again, decoded an
    unreadable one again and a stored-frame one twice again (per-process sets)."""
    import os

    import yolov4.data.image_io as image_io
    from yolov4.data.collate import DetectionCollate

    root = make_bad_coco(tmp_path)
    doc = json.loads((root / "annotations.json").read_text())
    rgba = next(im for im in doc["images"] if im["file_name"] == "rgba.png")
    rgba["width"], rgba["height"] = W + 6, H + 4  # decoded at another size: resized to it
    (root / "annotations.json").write_text(json.dumps(doc))
    data = load_coco(root / "annotations.json", root / "images", report=ProblemReport())
    log = tmp_path / "calls.txt"  # appended to by every worker process

    def note(*words: str) -> None:
        with log.open("a") as f:
            f.write(" ".join(words) + "\n")

    real_decode, real_add, real_note = (
        image_io.decode_image_details, ProblemReport.add, ProblemReport.note
    )  # fmt: skip

    def decode(data, where, **kw):
        note("decode", where)
        return real_decode(data, where, **kw)

    def add(self, kind, file, detail=""):
        note("report", str(os.getpid()), Path(file).name, repr(kind))
        real_add(self, kind, file, detail)

    def counted(self, kind, file, detail=""):
        note("report", str(os.getpid()), Path(file).name, repr(kind))
        real_note(self, kind, file, detail)

    monkeypatch.setattr(image_io, "decode_image_details", decode)
    monkeypatch.setattr(ProblemReport, "add", add)
    monkeypatch.setattr(ProblemReport, "note", counted)
    ds = DetectionDataset(data, PreprocessConfig(input_size=(64, 64)), augment, name="bad")
    loader = torch.utils.data.DataLoader(
        ds, batch_size=3, num_workers=workers, persistent_workers=False,
        multiprocessing_context="fork" if workers else None, collate_fn=DetectionCollate(),
    )  # fmt: skip
    for _ in range(2):  # epochs
        assert sum(len(batch["image_ids"]) for batch in loader) == len(data.records)
    lines = log.read_text().splitlines()
    reports = sorted(tuple(line.split(" ", 3)[2:]) for line in lines if line.startswith("report"))
    want = {(f, repr(k)) for f, k in {**DECODE_PROBLEMS, **DECODE_NOTES}.items()}
    want |= {("rgba.png", repr(Problem.SIZE_MISMATCH))}
    assert reports == sorted(want)  # one report each, over both epochs and all workers
    pids = {int(line.split()[1]) for line in lines if line.startswith("report")}
    assert (os.getpid() not in pids) if workers else (pids == {os.getpid()})  # where they ran
    if augment is None:  # each image once an epoch: the unreadable once, the stored-frame 2 + 1
        decodes = Counter(line.split()[1] for line in lines if line.startswith("decode"))
        once = {"unreadable.jpg", "truncated.jpg", "float.tif"}
        for name in {Path(r.file).name for r in data.records}:
            assert decodes[name] == (1 if name in once else 3 if name == "exif.jpg" else 2), name


@pytest.mark.parametrize("file", ["missing.jpg", *DECODE_PROBLEMS])
def test_strict_mode_raises_naming_the_file(tmp_path: Path, file: str):
    root = make_bad_coco(tmp_path)
    dataset = json.loads((root / "annotations.json").read_text())
    keep = {img["id"] for img in dataset["images"] if img["file_name"] in ("good.jpg", file)}
    dataset["images"] = [i for i in dataset["images"] if i["id"] in keep]
    dataset["annotations"] = [
        a
        for a in dataset["annotations"]
        if a["image_id"] in keep and a["bbox"] == BOX and a["category_id"] == 2
    ]
    (root / "annotations.json").write_text(json.dumps(dataset))
    with pytest.raises(DatasetError, match=file.replace(".", r"\.")):
        data = load_coco(
            root / "annotations.json", root / "images", report=ProblemReport(strict=True)
        )
        ds = DetectionDataset(data, PreprocessConfig(input_size=(64, 64)), None, strict=True)
        for i in range(len(ds)):
            ds[i]


def test_grayscale_files_are_counted_apart_from_problems_and_strict_mode_reads_them(tmp_path):
    """Ordinary grayscale JPEG/BMP/PNG files are read as darknet and ultralytics read them
    (three equal channels): a note, not a problem; strict mode reads them."""
    gray = np.tile(np.arange(W, dtype=np.uint8) * 7, (H, 1))
    cv2.imwrite(str(tmp_path / "g.jpg"), gray)
    Image.fromarray(gray).save(tmp_path / "g.bmp")
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    report = ProblemReport(strict=True, name="data.train")
    for name in ("g.jpg", "g.bmp", "g.png"):
        image = read_image(tmp_path / name, report)
        assert image.shape == (H, W, 3) and (image == image[..., :1]).all()
        assert np.abs(image[..., 0].astype(int) - gray).max() <= (0 if "jpg" not in name else 8)
    assert not report.problems
    assert report.summary() == (
        f"data.train: no problems found\n  note: 3 x {Note.GRAYSCALE}, e.g. {tmp_path / 'g.jpg'}: "
        "JPEG file"
    )


def test_palette_and_alpha_files_are_notes_and_deep_or_cmyk_ones_problems(tmp_path):
    """A palette PNG (its colours) and an 8-bit image with alpha (alpha dropped) decode as
    darknet and ultralytics read them, nothing repaired: notes, which strict mode reads. Samples
    of 16 bits (with alpha too) and CMYK are converted: problems, named with their layout."""
    rgb = np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8)
    palette = Image.fromarray(rgb).quantize(8)
    palette.save(tmp_path / "palette.png")
    palette.save(tmp_path / "palette_tr.png", transparency=0)
    cv2.imwrite(str(tmp_path / "rgba.png"), np.dstack([rgb, np.full((H, W), 9, np.uint8)]))
    Image.fromarray(rgb[..., 0]).convert("LA").save(tmp_path / "la.png")
    report = ProblemReport(strict=True, name="data.train")
    for name in ("palette.png", "palette_tr.png", "rgba.png", "la.png"):
        assert read_image(tmp_path / name, report).shape == (H, W, 3)
    np.testing.assert_array_equal(
        read_image(tmp_path / "palette.png", None), np.asarray(palette.convert("RGB"))
    )
    assert not report.problems
    assert [e.removeprefix(f"{tmp_path}/") for e in report.notes[Note.PALETTE]] == [
        "palette.png: PNG file, P pixels", "palette_tr.png: PNG file, P pixels",
    ]  # fmt: skip
    assert [e.removeprefix(f"{tmp_path}/") for e in report.notes[Note.ALPHA]] == [
        "rgba.png: PNG file, RGBA pixels", "la.png: PNG file, LA pixels",
    ]  # fmt: skip
    cv2.imwrite(str(tmp_path / "deep.png"), np.full((H, W), 5000, np.uint16))
    cv2.imwrite(str(tmp_path / "deep_rgba.png"), np.full((H, W, 4), 5000, np.uint16))
    cv2.imwrite(str(tmp_path / "deep_rgb.png"), rgb.astype(np.uint16) * 257)
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg")
    report.strict = False
    for name in ("deep.png", "deep_rgba.png", "deep_rgb.png", "cmyk.jpg"):
        assert read_image(tmp_path / name, report) is not None
    assert [p.split(": ")[1] for p in report.problems[Problem.CONVERTED]] == [
        "PNG file, I;16 pixels", "PNG file, 16-bit RGBA pixels", "PNG file, 16-bit RGB pixels",
        "JPEG file, CMYK pixels",
    ]  # fmt: skip
    assert "data.train: 4 problem(s)" in report.summary()
    assert "note: 2 x palette image" in report.summary()


@pytest.mark.parametrize("kind", [*ANNOTATION_PROBLEMS, Problem.UNKNOWN_CLASS])
def test_strict_mode_raises_on_bad_annotations(tmp_path: Path, kind: str):
    root = make_bad_coco(tmp_path)
    with pytest.raises(DatasetError, match=r"good\.jpg|missing\.jpg"):
        load_coco(root / "annotations.json", root / "images", report=ProblemReport(strict=True))


YOLO_LINES = {
    "ok.txt": ("0 0.5 0.5 0.2 0.2\n", None),
    "columns.txt": ("0 0.5 0.5 0.2\n", Problem.BAD_LINE),
    "text.txt": ("zero 0.5 0.5 0.2 0.2\n", Problem.BAD_LINE),
    "nan.txt": ("0 nan 0.5 0.2 0.2\n", Problem.BOX_NAN),
    "inf.txt": ("0 0.5 inf 0.2 0.2\n", Problem.BOX_NAN),  # not "a coordinate above 2"
    "tiny.txt": ("0 0.5 0.5 0.0001 0.0001\n", Problem.BOX_TINY),
    "class.txt": ("7 0.5 0.5 0.2 0.2\n", Problem.UNKNOWN_CLASS),
    "outside.txt": ("0 0.95 0.5 0.2 0.2\n", Problem.BOX_CLIPPED),
    "empty.txt": ("0 0.5 0.5 0 0.2\n", Problem.BOX_EMPTY),
}


def make_bad_yolo(root: Path, only: str | None = None) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for name, (line, _) in YOLO_LINES.items():
        if only is None or name in (only, "ok.txt"):
            _jpeg(root / "images" / name.replace(".txt", ".jpg"))
            (root / "labels" / name).write_text(line)
    return root


def test_yolo_label_problems_reported_with_file(tmp_path: Path):
    root = make_bad_yolo(tmp_path)
    report = ProblemReport()
    data = load_yolo(root / "images", ["a", "b"], report=report)
    for name, (_, kind) in YOLO_LINES.items():
        if kind is not None:
            assert any(name in f for f in report.problems[kind]), (name, kind)
    boxes = {Path(r.file).stem: r.boxes for r in data.records}
    np.testing.assert_allclose(boxes["ok"], [[12.8, 9.6, 19.2, 14.4]], atol=1e-4)
    np.testing.assert_allclose(boxes["outside"], [[27.2, 9.6, 32.0, 14.4]], atol=1e-4)
    assert len(boxes["columns"]) == 0 and len(boxes["nan"]) == 0


@pytest.mark.parametrize("name", [n for n, (_, k) in YOLO_LINES.items() if k is not None])
def test_yolo_strict_names_the_label_file(tmp_path: Path, name: str):
    root = make_bad_yolo(tmp_path, only=name)
    with pytest.raises(DatasetError, match=name.replace(".", r"\.")):
        load_yolo(root / "images", ["a", "b"], report=ProblemReport(strict=True))


def test_check_command_prints_the_report(tmp_path: Path, capsys: pytest.CaptureFixture):
    root = make_bad_coco(tmp_path)
    args = [
        f"data.{s}.{k}={root / v}"
        for s in ("train", "val")
        for k, v in (("annotations", "annotations.json"), ("images", "images"))
    ]
    assert check_main(["data=coco", *args]) == 1  # images and boxes lost
    out = capsys.readouterr().out
    assert "[train]" in out and "[val]" in out and "box sizes: small" in out
    for file in ("missing.jpg", *DECODE_PROBLEMS):
        assert file in out
    # missing.jpg, unreadable.jpg, float.tif and truncated.jpg (cut in its headers: no pixel)
    lost = "5 label lines or boxes lost, 4 images left out"
    assert (
        out.strip()
        .splitlines()[-1]
        .startswith(
            f"check-data: images or ground truth lost (exit 1): data.train: {lost}; data.val: {lost}."
        )
    )
    assert check_main(["data=coco", *args, "--strict"]) == 1
    assert "DatasetError" in capsys.readouterr().err
