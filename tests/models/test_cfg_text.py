"""A cfg's text read as darknet reads it (``read_cfg``, ``strip``, ``read_option``, the number
parsers of ``parse_yolo``/``parse_route``; transcribed in ``tests/oracles/darknet_cfg_read.py``):
comments, and what the parser does where darknet's reading and the text's look differ."""

from __future__ import annotations

import contextlib
import logging
import re
from unittest import mock

import cv2
import pytest
import torch

from tests.models.test_cfg import BASE, line_in, nth
from tests.models.test_zoo import assert_matches_opencv, boost_heads_
from tests.oracles import darknet_cfg_read as dk
from yolov4 import ConfigError, build_model
from yolov4.darknet import save_darknet_weights
from yolov4.models import cfg as cfg_module
from yolov4.models.cfg import parse_cfg

ANCHORS = "anchors=4,6, 8,8, 12,10, 16,20, 30,24, 40,44"

# numbers followed by a comment: (old text, new text, occurrence in BASE)
NUMBER_COMMENTS = [
    ("filters=8\n", "filters=8 # eight\n", 1),
    ("stride=2\n", "stride=2;s\n", 1),
    ("layers=0,-1", "layers=0,-1 # joined", 1),
    ("mask=0,1,2", "mask=0,1,2 ; first head", 1),
    ("classes=1", "classes=1#one", 2),
    (ANCHORS, ANCHORS + " # six", 1),
    (ANCHORS, ANCHORS + " # six, as w,h", 2),  # darknet counts commas up to the '#' only
]


def commented(edits=NUMBER_COMMENTS) -> str:
    text = BASE
    for old, new, n in edits:
        text = nth(text, old, new, n)
    return text


def network_of(text: str) -> dict:
    """The model config a cfg text gives, without the text itself."""
    config = build_model(cfg=text).config.to_dict()
    return {k: v for k, v in config.items() if k != "cfg"}


def darknet_reads(text: str, layer: int, key: str):
    """What darknet's parser takes from ``key`` of darknet layer ``layer`` (-1: [net])."""
    _, options = dk.read_cfg(text)[layer + 1]
    raw = dk.option_find(options, key)
    if key == "mask":
        return dk.parse_yolo_mask(raw)
    if key == "anchors":
        return dk.parse_anchors(raw, dk.atoi(dk.option_find(options, "num")))
    if key in ("layers", "from"):
        return dk.parse_route_layers(raw)
    return dk.atoi(raw)


@pytest.mark.parametrize("old, new, n", NUMBER_COMMENTS)
def test_a_number_with_a_trailing_comment_reads_as_darknet_reads_it(old, new, n):
    text = nth(BASE, old, new, n)
    key = old.split("=")[0]
    sections = parse_cfg(text)
    layer = next(
        i - 1
        for i, s in enumerate(sections)
        if key in s.options and s.lines[key] == text.splitlines().index(new.strip()) + 1
    )
    s = sections[layer + 1]
    ours = s.get_floats(key) if key == "anchors" else s.get_ints(key)
    expected = darknet_reads(text, layer, key)
    assert ours == (expected if isinstance(expected, list) else [expected])
    assert network_of(text) == network_of(BASE)


def test_a_cfg_with_comments_after_numbers_matches_opencv(tmp_path, randomize):
    """OpenCV's importer reads the commented cfg itself (its number parsing stops at the '#'
    too; OpenCV, unlike darknet, reads an anchors comment's commas, so none here)."""
    text = commented([e for e in NUMBER_COMMENTS if e[1] != ANCHORS + " # six, as w,h"])
    torch.manual_seed(0)
    model = boost_heads_(randomize(build_model(cfg=text), seed=3))
    cfg, weights = tmp_path / "commented.cfg", tmp_path / "commented.weights"
    cfg.write_text(text.replace("[yolo]\n", "[yolo]\nthresh=0\nnms_threshold=0\n"))
    save_darknet_weights(model, weights)
    net = cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
    assert_matches_opencv(model, net, torch.rand(1, 3, 32, 32))


TEXT_COMMENTS = {
    # id: (old, new, darknet layer, key)
    "activation": ("activation=mish", "activation=mish # the CSP block", 3, "activation"),
    "head activation": ("activation=linear", "activation=linear;head", 5, "activation"),
    "iou_loss": ("classes=1\nnum=6\n", "classes=1\nnum=6\niou_loss=ciou # box\n", 6, "iou_loss"),
    "nms_kind": ("classes=1\nnum=6\n", "classes=1\nnum=6\nnms_kind=greedynms#x\n", 6, "nms_kind"),
}


@pytest.mark.parametrize("case", TEXT_COMMENTS)
def test_a_text_value_with_a_trailing_comment_is_refused_saying_what_darknet_reads(case, tmp_path):
    """darknet reads ``activation=mish # the CSP block`` as the activation ``mish#theCSPblock``:
    one it does not know, so it warns and trains ReLU there; ``iou_loss=ciou # box`` as an
    unknown loss (IoU). The weights of such a cfg are not what the text says: refused."""
    old, new, layer, key = TEXT_COMMENTS[case]
    text = nth(BASE, old, new)
    path = tmp_path / "mine.cfg"
    path.write_text(text)
    raw = dk.option_find(dk.read_cfg(text)[layer + 1][1], key)
    with pytest.raises(ConfigError) as e:
        build_model(cfg=path)
    message = str(e.value)
    head = (
        f"{path}:{line_in(text, layer, key)}: [{'convolutional' if layer != 6 else 'yolo'}] {key}"
    )
    assert message.startswith(f"{head}: darknet reads {raw!r} (# and ; start a comment only")
    if key == "activation":
        assert dk.get_activation(raw) == "relu"  # darknet's fallback, which the message names
        assert "it warns and uses relu" in message and "activation=relu" in message
        with pytest.raises(cv2.error, match="Unsupported activation"):
            cv2.dnn.readNetFromDarknet(str(path))  # "OpenCV refuses the cfg"
    else:
        assert f"not {raw.split('#')[0].split(';')[0]!r}" in message


def test_route_layers_whose_comment_has_commas_are_refused_naming_darknets_layers(tmp_path):
    """parse_route counts every comma of ``layers``, a comment's too: ``0,-1 # a, b`` is three
    layers for darknet (the third ``atoi("b")``: layer 0)."""
    text = nth(BASE, "layers=0,-1", "layers=0,-1 # a, b")
    path = tmp_path / "mine.cfg"
    path.write_text(text)
    layers = dk.parse_route_layers(dk.option_find(dk.read_cfg(text)[5][1], "layers"))
    assert layers == [0, -1, 0]
    where = f"{path}:{line_in(text, 4, 'layers')}: [route] layers"
    with pytest.raises(ConfigError, match=re.escape(f"{where}: darknet reads '0,-1#a,b'")) as e:
        build_model(cfg=path)
    assert "the layers 0,-1,0;" in str(e.value)


def test_a_section_header_with_a_trailing_comment_is_refused(tmp_path):
    text = nth(BASE, "[yolo]\n", "[yolo]   # the first head\n")
    assert dk.read_cfg(text)[7][0] == "[yolo]#thefirsthead"  # a type darknet does not know
    path = tmp_path / "mine.cfg"
    path.write_text(text)
    with pytest.raises(
        ConfigError,
        match=re.escape(
            f"{path}:{line_in(text, 6)}: darknet reads the section header "
            "'[yolo]#thefirsthead' whole"
        ),
    ):
        build_model(cfg=path)


def test_comment_lines_and_blanks_as_darknet():
    """A line is a comment when its first non-blank character is # or ;; blanks anywhere in a
    line are dropped (``fil ters = 8`` is ``filters=8`` for darknet's strip too)."""
    text = nth(BASE, "filters=8\n", "  ; a comment\n\t# another\nfil ters = 8\n")
    assert dk.option_find(dk.read_cfg(text)[1][1], "filters") == "8"
    assert network_of(text) == network_of(BASE)


# -- keys darknet reads, keys it does not ---------------------------------------------------------
# one layer of each kind the builder implements (darknet layer index in the comments)
KINDS = """\
[net]
width=32
height=32
channels=3

[convolutional]
batch_normalize=1
filters=8
size=3
stride=2
pad=1
activation=leaky

[convolutional]
filters=8
size=3
stride=1
pad=1
activation=leaky

[shortcut]
from=-2
activation=linear

[maxpool]
size=2
stride=2

[upsample]
stride=2

[route]
layers=-1,2

[dropout]
probability=0.1

[local_avgpool]
size=1
stride=1

[sam]
from=-2

[avgpool]

[scale_channels]
from=-2

[route]
layers=-3

[convolutional]
filters=18
size=1
stride=1
pad=1
activation=linear

[yolo]
mask=0,1,2
anchors=4,6, 8,8, 12,10
classes=1
num=3
"""
KIND_LAYER = {"net": -1, "convolutional": 1, "shortcut": 2, "maxpool": 3, "upsample": 4,
              "route": 5, "dropout": 6, "local_avgpool": 7, "sam": 8, "avgpool": 9,
              "scale_channels": 10, "yolo": 13}  # fmt: skip


def with_key(text: str, kind: str, line: str) -> str:
    """``text`` with ``line`` added to the section of darknet layer ``KIND_LAYER[kind]``."""
    header = text.splitlines()[line_in(text, KIND_LAYER[kind]) - 1]
    n = sum(1 for h in text.splitlines()[: line_in(text, KIND_LAYER[kind])] if h == header)
    return nth(text, header + "\n", f"{header}\n{line}\n", n)


@contextlib.contextmanager
def cfg_warnings():
    """The messages the cfg reader logs inside the block (a list filled as they come), each
    cfg's as if this process had not built it before (it logs those of a cfg once)."""
    seen: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: seen.append(record.getMessage())
    logger = logging.getLogger(cfg_module.__name__)
    logger.addHandler(handler)
    try:
        with mock.patch.object(cfg_module, "_WARNED", set()):
            yield seen
    finally:
        logger.removeHandler(handler)


def build_quietly(text: str, **kw):
    """build_model, with every cfg warning it logs."""
    with cfg_warnings() as seen:
        model = build_model(cfg=text, **kw)
    return model, seen


# each key darknet reads that the KINDS cfg does not set already
READ_KEYS = [
    (kind, key)
    for kind, keys in dk.PARSER_KEYS.items()
    for key in keys
    if dk.option_find(dk.read_cfg(KINDS)[KIND_LAYER[kind] + 1][1], key) is None
]


@pytest.mark.parametrize("kind, key", READ_KEYS, ids=[f"{k}-{v}" for k, v in READ_KEYS])
def test_every_key_darknet_reads_is_built_or_refused_never_taken_for_unread(kind, key):
    """Each key darknet's parser reads (tests/oracles/darknet_cfg_read.py PARSER_KEYS), set in a
    cfg that lacks it: the network builds, or the cfg is refused as a key darknet reads but the
    builder does not implement (or for its value); never "darknet does not read this key"."""
    try:
        _, seen = build_quietly(with_key(KINDS, kind, f"{key}=1"))
    except ConfigError as e:
        assert "does not read" not in str(e)
    else:
        assert not [m for m in seen if "does not read" in m], seen


INERT = {
    # (section, key=value): what darknet does with it (src/parser.c and its readers)
    ("net", "show_receptive_field=1"): "prints each layer's receptive field",
    ("convolutional", "stream=1"): "the CUDA stream the layer runs on",
    ("convolutional", "wait_stream=0"): "a CUDA stream to wait for",
    ("convolutional", "angle=15"): "read by sway/rotate/stretch kernels only",
    ("route", "stream=1"): "the CUDA stream",
    ("route", "wait_stream=0"): "a CUDA stream to wait for",
    ("yolo", "show_details=0"): "the loss printout's format",
    ("yolo", "track_history_size=5"): "demo tracker (with embedding_layer only)",
    ("yolo", "sim_thresh=0.8"): "demo tracker",
    ("yolo", "dets_for_track=1"): "demo tracker",
    ("yolo", "dets_for_show=1"): "demo tracker",
    ("yolo", "track_ciou_norm=0.01"): "demo tracker",
}


@pytest.mark.parametrize("kind, line", INERT, ids=[f"{k}-{v}" for k, v in INERT])
def test_keys_darknet_reads_without_effect_here_are_accepted(kind, line):
    """``[net] show_receptive_field=0`` was refused as "not a key of darknet's [net] section";
    darknet reads it (and these others) with no effect on the network or its training."""
    text = with_key(KINDS, kind, line)
    model, seen = build_quietly(text)
    assert seen == []
    assert network_of(text) == network_of(KINDS)
    key, value = line.split("=")
    section = model.sections[KIND_LAYER[kind] + 1]
    assert section.options[key] == value  # kept: written back as it is


# darknet's value for each refused key it reads when the cfg leaves the key out, transcribed
# from src/parser.c (the option_find_* default in the function named)
DEFAULTS = [
    *[(kind, line) for kind in ("convolutional", "route", "shortcut", "maxpool", "upsample",
                                "dropout", "local_avgpool", "sam", "avgpool",
                                "scale_channels", "yolo")
      for line in ("clip=0", "onlyforward=0", "dont_update=0", "burnin_update=0",
                   "train_only_bn=0", "dontload=0", "dontloadscales=0", "learning_rate=1")],
    *[(kind, "stopbackward=0")
      for kind in ("route", "shortcut", "maxpool", "upsample", "dropout", "local_avgpool",
                   "sam", "avgpool", "scale_channels", "yolo")],
    # parse_convolutional
    ("convolutional", "antialiasing=0"),
    ("convolutional", "assisted_excitation=0"), ("convolutional", "cbn=0"),
    ("convolutional", "binary=0"), ("convolutional", "xnor=0"), ("convolutional", "bin_output=0"),
    ("convolutional", "sway=0"), ("convolutional", "rotate=0"), ("convolutional", "stretch=0"),
    ("convolutional", "stretch_sway=0"), ("convolutional", "flipped=0"),
    ("convolutional", "dot=0"), ("convolutional", "grad_centr=0"),
    ("convolutional", "reverse=0"), ("convolutional", "coordconv=0"),
    # parse_shortcut, parse_maxpool, parse_upsample
    ("maxpool", "maxpool_depth=0"), ("maxpool", "out_channels=1"), ("maxpool", "antialiasing=0"),
    ("maxpool", "maxpool_zero_nonmax=0"),
    # parse_dropout
    ("dropout", "dropblock=0"), ("dropout", "dropblock_size_rel=0"),
    ("dropout", "dropblock_size_abs=0"),
    # parse_yolo
    ("yolo", "delta_normalizer=1"), ("yolo", "iou_thresh_kind=iou"), ("yolo", "focal_loss=0"),
    ("yolo", "embedding_layer=999999"),
]  # fmt: skip
# the same for darknet's YOLOv2 layers (parse_reorg_old, parse_region; background: read by the
# darknet of the first YOLOv2 cfgs), accepted in a [region] network (tests/models/test_region.py)
YOLOV2_DEFAULTS = [
    *[(kind, line) for kind in ("reorg", "region")
      for line in ("clip=0", "onlyforward=0", "dont_update=0", "burnin_update=0",
                   "train_only_bn=0", "dontload=0", "dontloadscales=0", "learning_rate=1",
                   "stopbackward=0")],
    ("reorg", "reverse=0"), ("region", "log=0"), ("region", "sqrt=0"), ("region", "background=0"),
]  # fmt: skip
# parse_reorg ([reorg3d]): the keys every layer reads (tests/models/test_reorg.py)
REORG3D_DEFAULTS = [("reorg3d", line) for _, line in YOLOV2_DEFAULTS[:9]]
# parse_gaussian_yolo: the keys every layer reads and its own option_find defaults
# (tests/models/test_gaussian_yolo.py)
GAUSSIAN_DEFAULTS = [
    *[("Gaussian_yolo", line) for _, line in YOLOV2_DEFAULTS[:9]],
    ("Gaussian_yolo", "delta_normalizer=1"), ("Gaussian_yolo", "iou_thresh_kind=iou"),
    ("Gaussian_yolo", "yolo_point=center"),
]  # fmt: skip


@pytest.mark.parametrize("kind, line", DEFAULTS, ids=[f"{k}-{v}" for k, v in DEFAULTS])
def test_a_refused_key_set_to_darknets_default_is_accepted(kind, line):
    """``[maxpool] maxpool_depth=0``, ``[yolo] focal_loss=0``: darknet reads the key and
    gets the value it uses without it; nothing changes, so the cfg builds (the key kept)."""
    text = with_key(KINDS, kind, line)
    model, seen = build_quietly(text)
    assert seen == []
    assert network_of(text) == network_of(KINDS)
    key, value = line.split("=")
    assert model.sections[KIND_LAYER[kind] + 1].options[key] == value


def test_the_default_table_is_darknets():
    """yolov4's table of defaults (models/cfg_keys.py) against the transcription above: the
    same refused keys, and every value equal as darknet's atoi/atof read it."""
    from yolov4.models.cfg_keys import DARKNET_DEFAULTS, LAYER_KEYS

    ours = {(kind, key): value for kind, keys in DARKNET_DEFAULTS.items()
            for key, value in keys.items() if key not in LAYER_KEYS[kind]}  # fmt: skip
    transcribed = {(kind, line.split("=")[0]): line.split("=")[1]
                   for kind, line in DEFAULTS + YOLOV2_DEFAULTS + REORG3D_DEFAULTS + GAUSSIAN_DEFAULTS if line.split("=")[0] not in LAYER_KEYS[kind]}  # fmt: skip
    assert set(ours) == set(transcribed)
    for (kind, key), value in ours.items():
        raw = transcribed[kind, key]
        assert value == (raw if isinstance(value, str) else dk.atof(raw)), (kind, key)


def test_a_refused_key_off_darknets_default_names_the_default(tmp_path):
    text = with_key(KINDS, "yolo", "focal_loss=1")
    with pytest.raises(ConfigError, match=r"without effect here: \[.*'focal_loss=0'"):
        build_model(cfg=text)


CHANGING = {
    # (section, key=value): what it changes in darknet
    ("convolutional", "antialiasing=1"): "a blur layer after the conv",
    ("convolutional", "xnor=1"): "binary weights and inputs",
    ("convolutional", "flipped=1"): "the kernel read transposed from .weights",
    ("convolutional", "dontloadscales=1"): "the .weights layout",
    ("maxpool", "maxpool_zero_nonmax=1"): "the output",
    ("maxpool", "onlyforward=1"): "no backward through the layer",
    ("yolo", "focal_loss=1"): "the class loss",
    ("yolo", "delta_normalizer=2"): "the gradient",
    ("yolo", "embedding_layer=-2"): "an embedding output",
}


@pytest.mark.parametrize("kind, line", CHANGING, ids=[f"{k}-{v}" for k, v in CHANGING])
def test_keys_darknet_reads_that_change_the_network_are_refused(kind, line, tmp_path):
    path = tmp_path / "mine.cfg"
    text = with_key(KINDS, kind, line)
    path.write_text(text)
    key = line.split("=")[0]
    where = f"{path}:{line_in(text, KIND_LAYER[kind], key)}: [{kind}] {key}"
    with pytest.raises(
        ConfigError,
        match=re.escape(f"{where}: key not supported for [{kind}]: darknet reads it, and it "
                        "changes the layer's output, its weights or their training"),
    ):  # fmt: skip
        build_model(cfg=path)


# (section, line, the other section types darknet reads the key in)
UNREAD = [
    ("net", "max_epochs=300", ""),  # Gaussian_yolov3_BDD.cfg
    ("net", "my_note=1", ""),
    ("convolutional", "foo=1", ""),
    ("yolo", "thresh=0.25", "[region]"),  # OpenCV's key, darknet's [region] only
    # yolov4-sam-mish-csp-reorg-bfm.cfg: parse_gaussian_yolo's key, no misspelt iou_normalizer
    ("yolo", "uc_normalizer=0.07", "[Gaussian_yolo]"),
]


@pytest.mark.parametrize("kind, line, elsewhere", UNREAD, ids=[f"{k}-{v}" for k, v, _ in UNREAD])
def test_a_key_darknet_does_not_read_is_a_warning_naming_its_line(kind, line, elsewhere, tmp_path):
    key = line.split("=")[0]
    assert key not in dk.PARSER_KEYS[kind]
    path = tmp_path / "mine.cfg"
    text = with_key(KINDS, kind, line)
    path.write_text(text)
    _, seen = build_quietly(path)
    where = f"{path}:{line_in(text, KIND_LAYER[kind], key)}: [{kind}] {key}"
    note = f" (it reads it in {elsewhere})" if elsewhere else ""
    assert seen == [f"{where}: darknet does not read this key in [{kind}] and ignores it{note}; "
                    "so does yolov4"]  # fmt: skip
    assert network_of(text) == network_of(KINDS)


NEAR = [
    ("net", "widht=64", "width"),
    ("net", "max_batchs=600", "max_batches"),
    ("convolutional", "activaton=mish", "activation"),
    ("yolo", "ignore_tresh=0.7", "ignore_thresh"),
    ("route", "layer=-2", "layers"),
]


@pytest.mark.parametrize("kind, line, meant", NEAR, ids=[n[1] for n in NEAR])
def test_a_near_miss_of_a_key_darknet_reads_is_refused_with_the_suggestion(kind, line, meant):
    key = line.split("=")[0]
    assert key not in dk.PARSER_KEYS[kind] and meant in dk.PARSER_KEYS[kind]
    text = with_key(KINDS, kind, line)
    where = f"<cfg>:{line_in(text, KIND_LAYER[kind], key)}: [{kind}] {key}"
    with pytest.raises(
        ConfigError,
        match=re.escape(f"{where}: darknet does not read this key in [{kind}]; did you mean "
                        f"{meant}?"),
    ):  # fmt: skip
        build_model(cfg=text)


def test_a_net_training_key_set_twice_keeps_darknets_first_value_with_a_warning(tmp_path):
    """yolov3-openimages.cfg and yolo9000.cfg set batch and subdivisions twice in [net]:
    darknet's option_find returns the first."""
    text = KINDS.replace("[net]\n", "[net]\nbatch=1\nsubdivisions=1\n# Training\nbatch=64\n", 1)
    path = tmp_path / "twice.cfg"
    path.write_text(text)
    first = dk.option_find(dk.read_cfg(text)[0][1], "batch")
    model, seen = build_quietly(path)
    assert seen == [
        f"{path}:5: [net] batch: set twice (first on line 2: batch=1); darknet reads the first, "
        "and so does yolov4 (batch=64 here is ignored)"
    ]
    assert model.sections[0].options["batch"] == first == "1"
    from yolov4.darknet import write_darknet_cfg

    written = write_darknet_cfg(model)
    assert "batch=1\n" in written and "batch=64" not in written


def test_a_network_key_set_twice_is_refused_saying_darknet_reads_the_first(tmp_path):
    text = KINDS.replace("width=32\n", "width=32\nwidth=64\n", 1)
    with pytest.raises(
        ConfigError,
        match=re.escape("<cfg>:3: [net] width: set twice (first on line 2: width=32); darknet "
                        "reads the first"),
    ):  # fmt: skip
        build_model(cfg=text)


def test_a_cfg_warns_once_per_build_and_not_when_rebuilt_from_its_config():
    """Warned where the cfg enters; the model's own re-reads of the text, and a checkpoint's
    model config (the text stored with the rest), stay quiet."""
    from yolov4.models import ModelConfig, YOLOv4

    text = with_key(KINDS, "net", "max_epochs=300")
    model, seen = build_quietly(text)
    assert len(seen) == 1
    with cfg_warnings() as again:
        YOLOv4(ModelConfig.from_dict(model.config.to_dict()))
    assert again == []


def test_a_cfgs_warnings_are_logged_once_per_process_however_often_it_is_built(tmp_path):
    """A run builds its network several times (the EMA copy, a checkpoint's check, evaluate,
    export): a cfg's warnings are logged at its first build only, another cfg's at its own."""
    path = tmp_path / "mine.cfg"
    path.write_text(with_key(KINDS, "net", "max_epochs=300"))
    other = with_key(KINDS, "net", "my_note=1")
    with cfg_warnings() as seen:
        model = build_model(cfg=path)
        build_model(**model.config.to_dict())  # its text, as a checkpoint stores it
        build_model(cfg=path)
        assert [m.split(": ", 1)[0] for m in seen] == [f"{path}:2"]
        build_model(cfg=other)
        build_model(cfg=other)
    assert len(seen) == 2 and seen[1].startswith("<cfg>:2: [net] my_note: darknet does not read")
