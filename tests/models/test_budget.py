"""The resource budget of a cfg (models/budget.py): hostile cfgs refused before allocation, with
bounded memory; every zoo network (yolov4-p6 at 1280, 80 classes) inside it.

The hostile cfgs are built in a child process whose address space is capped
(``resource.setrlimit(RLIMIT_AS)``: what the interpreter and torch hold, plus 1 GiB), in a bounded
time: a network that tried to allocate its layers or run its forward pass would fail there with a
``MemoryError``/``RuntimeError`` (reported, so the test fails), not take the machine down.
"""

from __future__ import annotations

import codecs
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from yolov4 import ConfigError, InputError, build_model
from yolov4.models import ModelConfig, budget
from yolov4.models.cfg import ZOO, read_zoo_cfg, resolve_layers
from yolov4.models.config import config_sections

# a small valid network: one conv (layer 0, stride 2), {body}, the head conv and a [yolo]
BASE = """[net]
width={side}
height={side}
channels=3

[convolutional]
batch_normalize=1
filters=8
size=3
stride=2
pad=1
activation=leaky
{body}
[convolutional]
filters={filters}
size=1
stride=1
pad=1
activation=linear

[yolo]
mask=0,1,2
anchors={anchors}
classes={classes}
num={num}
"""
ANCHORS = "10,14, 23,27, 37,58"


def hostile(body="", side=64, classes=1, anchors=ANCHORS, num=3, filters=None) -> str:
    filters = 3 * (classes + 5) if filters is None else filters
    return BASE.format(
        side=side, body=body, classes=classes, anchors=anchors, num=num, filters=filters
    )


ROUTES = "".join("\n[route]\nlayers=-1,-1\n" for _ in range(24)) + "\n[route]\nlayers=0\n"
CONV = "\n[convolutional]\nfilters={f}\nsize={k}\nstride=1\npad=1\nactivation=leaky\n"
# case: (cfg text, what the error must name)
CASES = {
    # layer k of the chain has 8 * 2**k channels: layer 13 is the first over 32768
    "route -1,-1 repeated": (hostile(ROUTES), ["[route] layers: (layer 13)", "MAX_CHANNELS"]),
    "maxpool size=16000": (
        hostile("\n[maxpool]\nsize=16000\nstride=1\n"),
        ["[maxpool] size", "16000", "MAX_POOL_SIZE"],
    ),
    "filters=1e8": (
        hostile(CONV.format(f=100_000_000, k=1)),
        ["[convolutional] filters", "100000000", "16,384"],
    ),
    "size=30001": (
        hostile(CONV.format(f=8, k=30001)),
        ["[convolutional] size", "30001", "MAX_KERNEL_SIZE"],
    ),
    "classes=5e7": (hostile(classes=50_000_000), ["[yolo] classes", "50,000,000", "2,000"]),
    "net 32768 px": (hostile(side=32768), [":3: [net] height", "32768", "MAX_INPUT_SIDE"]),
    "18 MB anchors line": (
        hostile(anchors=",".join(["10,14"] * 3_000_000), num=3_000_000),
        ["MAX_CFG_BYTES", "18,000,"],
    ),
    "NaN anchors": (hostile(anchors="nan,14, 23,27, 37,58"), ["[yolo] anchors", "nan"]),
    "inf anchors": (hostile(anchors="10,inf, 23,27, 37,58"), ["[yolo] anchors", "inf"]),
    "negative anchors": (hostile(anchors="10,14, -23,27, 37,58"), ["[yolo] anchors", "-23"]),
}
CHILD = textwrap.dedent(
    """
    import io, json, resource, sys
    import torch
    from yolov4 import build_model
    from yolov4.models.__main__ import main

    def vm_kb():
        return int(open("/proc/self/status").read().split("VmSize:")[1].split()[0])

    cap = vm_kb() * 1024 + (1 << 30)  # what is mapped now, plus 1 GiB
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    results = {}
    paths = json.loads(sys.argv[1])
    # python -m yolov4.models --cfg-file: a usage error (exit 2) naming the key
    sys.stderr = io.StringIO()
    try:
        main(["--cfg-file", paths["net 32768 px"], "--repeats", "0"])
        results["cli"] = ["ran", ""]
    except BaseException as e:
        results["cli"] = [repr(e)[:200], sys.stderr.getvalue()[-2000:]]
    sys.stderr = sys.__stderr__
    for name, path in paths.items():
        try:
            model = build_model(cfg=path).eval()
            with torch.no_grad():  # what Predictor/export do next
                model(torch.zeros(1, 3, *model.config.input_size))
            results[name] = ["built", ""]
        except BaseException as e:
            results[name] = [type(e).__name__, str(e)[:2000]]
    print(json.dumps(results))
    """
)


@pytest.fixture(scope="module")
def child_results(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    paths = {}
    for i, (name, (text, _)) in enumerate(CASES.items()):
        paths[name] = str(folder / f"hostile{i}.cfg")
        (folder / f"hostile{i}.cfg").write_text(text)
    paths["/dev/zero"] = "/dev/zero"  # e.g. a checkpoint's model.cfg naming a device
    paths["not UTF-8"] = str(folder / "latin1.cfg")
    (folder / "latin1.cfg").write_bytes(
        hostile().encode().replace(b"channels", b"# \xe9t\xe9\nchannels")
    )
    run = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(paths)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.splitlines()[-1])


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_cfg_is_a_config_error_naming_the_key(child_results, case):
    kind, msg = child_results[case]
    assert kind == "ConfigError", f"{case}: {kind}: {msg[:500]}"
    for part in CASES[case][1]:
        assert part in msg, f"{case}: {part!r} not in {msg!r}"
    assert "hostile" in msg  # the file


def test_endless_cfg_file_is_read_no_further_than_the_limit(child_results):
    """/dev/zero (under the child's memory cap): read up to the limit, then named binary."""
    kind, msg = child_results["/dev/zero"]
    assert kind == "ConfigError", msg
    assert "/dev/zero:1: not text: byte offset 0 is a NUL byte" in msg


def test_endless_text_stream_is_read_no_further_than_the_limit(tmp_path, monkeypatch):
    """A pipe (no size to stat) that would write more text than the limit."""
    import threading

    monkeypatch.setattr(budget, "MAX_CFG_BYTES", 4096)
    fifo = tmp_path / "endless.cfg"
    os.mkfifo(fifo)

    def write() -> None:
        try:
            with fifo.open("w") as f:
                f.write("#\n" * 8192)
        except BrokenPipeError:  # the reader stopped at the limit
            pass

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    with pytest.raises(ConfigError, match=r"endless.cfg: cfg file of more than 4,096 bytes, over"):
        build_model(cfg=str(fifo))
    writer.join(10)


def test_a_binary_file_given_as_the_cfg_is_named_before_its_size(tmp_path, monkeypatch):
    """model.cfg=my.weights: a binary file (NUL bytes in its first KB) is named as not text,
    not as a cfg file over the size limit."""
    from yolov4.darknet import save_darknet_weights

    weights = save_darknet_weights(build_model(cfg=hostile()), tmp_path / "my.weights")
    monkeypatch.setattr(budget, "MAX_CFG_BYTES", 64)  # the file is over it
    assert weights.stat().st_size > budget.MAX_CFG_BYTES
    with pytest.raises(ConfigError) as e:
        build_model(cfg=str(weights))
    assert str(e.value) == (
        f"{weights}:1: not text: byte offset 0 is a NUL byte; a darknet cfg is plain text (is "
        "this the .weights file?)"
    )
    small = tmp_path / "small.cfg"  # under the limit, a NUL after some text: its line
    small.write_bytes(b"[net]\nwidth=32\x00\n")
    with pytest.raises(ConfigError, match=r"small.cfg:2: not text: byte offset 14 is a NUL"):
        build_model(cfg=str(small))


def test_cfg_that_is_not_utf8_names_the_file_and_byte_offset(child_results):
    kind, msg = child_results["not UTF-8"]
    assert kind == "ConfigError", msg
    offset = hostile().encode().index(b"channels") + 2  # the first byte of "\xe9t\xe9"
    assert "latin1.cfg:4" in msg and f"byte offset {offset}" in msg and "UTF-8" in msg


@pytest.mark.parametrize(
    "bom, codec, shown",
    [
        (b"", "utf-16", "UTF-16 text (BOM FF FE)"),  # Notepad's "Unicode"
        (codecs.BOM_UTF16_BE, "utf-16-be", "UTF-16 text (BOM FE FF)"),
        (b"", "utf-32", "UTF-32 text (BOM FF FE 00 00)"),
    ],
)
def test_a_cfg_of_utf16_text_is_named_as_such_with_the_fix(tmp_path, bom, codec, shown):
    data = bom + read_zoo_cfg("yolov4-tiny").encode(codec)
    path = tmp_path / "unicode.cfg"
    path.write_bytes(data)
    expected = f"expected UTF-8 text, found {shown}: save it as UTF-8"
    with pytest.raises(ConfigError) as e:
        build_model(cfg=str(path))
    assert str(e.value) == f"{path}: {expected}"
    with pytest.raises(ConfigError) as e:
        build_model(cfg=data)
    assert str(e.value) == f"<cfg>: {expected}"


def test_cfg_file_larger_than_the_limit_is_not_read(tmp_path, monkeypatch):
    path = tmp_path / "big.cfg"
    path.write_text(hostile() + "#" * 5000)
    monkeypatch.setattr(budget, "MAX_CFG_BYTES", 4096)
    with pytest.raises(ConfigError, match=r"big.cfg: cfg file of .* bytes, over the limit 4,096"):
        build_model(cfg=str(path))


def test_activation_memory_of_parameterless_layers_is_bounded():
    """Routes that stay under the channel limit, at a size under the side limit: the sum of
    their outputs is what is refused, naming the largest layer and the input size."""
    body = "".join("\n[route]\nlayers=-1,-1\n" for _ in range(11)) + "\n[route]\nlayers=0\n"
    with pytest.raises(ConfigError) as e:
        build_model(cfg=hostile(body, side=4096))
    msg = str(e.value)
    assert "model.input_size [4096, 4096]" in msg and "MAX_ACTIVATION_BYTES" in msg
    assert "[route]" in msg and "layer 11" in msg  # the largest output: 8 * 2**11 channels


def test_overrides_and_checkpoint_configs_are_bounded_too():
    with pytest.raises(ConfigError, match=r"model.num_classes: 50,000,000 classes, over"):
        build_model("yolov4-tiny", num_classes=50_000_000)
    with pytest.raises(ConfigError, match=r"model.input_size: a side of 32768 pixels, over"):
        build_model("yolov4-tiny", input_size=[32768, 32768])
    config = ModelConfig.load("yolov4-tiny").to_dict()
    config["anchors"][2] = [float("nan"), 5.0]
    with pytest.raises(ConfigError, match=r"model.anchors: .* got nan"):
        ModelConfig.from_dict(config)


def test_forward_at_an_image_size_over_the_budget_is_an_input_error():
    model = build_model(cfg=hostile("\n[route]\nlayers=-1,-1\n\n[route]\nlayers=0\n")).eval()
    side = 8192 + 32  # side limit: refused from the shape, no image of that size is made
    images = torch.zeros(1, 3, 1, 1).expand(1, 3, side, side)
    with pytest.raises(InputError, match=r"input image size: a side of 8224 pixels"):
        model(images)


def test_limits_are_overridable(monkeypatch):
    monkeypatch.setattr(budget, "MAX_CLASSES", 100)  # every check reads the module constant
    with pytest.raises(ConfigError, match=r"101 classes, over the limit 100"):
        build_model("yolov4-tiny", num_classes=101)
    assert build_model("yolov4-tiny", num_classes=100).num_classes == 100
    monkeypatch.setenv("YOLOV4_MAX_CLASSES", "5000")
    assert budget._env("MAX_CLASSES", 2000) == 5000
    monkeypatch.setenv("YOLOV4_MAX_CLASSES", "lots")
    with pytest.raises(ConfigError, match=r"YOLOV4_MAX_CLASSES: expected a positive integer"):
        budget._env("MAX_CLASSES", 2000)


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("MAX_LAYERS", 37, r"yolov4-tiny.cfg:\d+: \[yolo\]: layer 37: the cfg has 38 layers, over"),
        ("MAX_FILTERS", 256, r"\[convolutional\] filters: \(layer 26\) 512, over the limit 256"),
        ("MAX_UPSAMPLE_STRIDE", 1, r"\[upsample\] stride: \(layer 33\) 2, over the limit 1 "),
        ("MAX_ANCHORS", 5, r"\[yolo\] num: 6 anchors, over the limit 5 "),
        ("MAX_ANCHOR_SIDE", 300, r"\[yolo\] anchors: .* \(0, 300\] pixels .* got 344.0"),
        (
            "MAX_PARAMS",
            6_000_000,
            r"cfg:193: \[convolutional\] filters: \(layer 26, the largest: 2,361,344\) the network has 6,062,814 parameters, over",
        ),
        (
            "MAX_ACTIVATION_BYTES",
            1 << 20,
            r"model.input_size \[416, 416\]: one image\'s forward pass writes 0.04 GiB of layer outputs \(largest: yolov4-tiny.cfg:\d+: \[convolutional\], layer 0, 0.01 GiB\): 45,769,932 bytes, over the limit 1,048,576 ",
        ),
    ],
)
def test_each_limit_names_the_key_and_the_bound(monkeypatch, name, value, message):
    """yolov4-tiny against each limit set just under its own value."""
    monkeypatch.setattr(budget, name, value)
    with pytest.raises(ConfigError, match=message):
        ModelConfig.load("yolov4-tiny")


@pytest.mark.parametrize("name, size", [("yolov4-tiny", (64, 96)), ("yolov3-tiny", (64, 64))])
def test_activation_bytes_equal_the_outputs_of_a_real_forward_pass(name, size):
    """The budget's count against forward hooks on every layer of the built network: the input
    plus each layer's output that is new memory (not a [route]'s single input or its view), plus the -inf padded copy of yolov3-tiny's size-2 stride-1
    maxpool (padded right/bottom only)."""
    model = build_model(name, num_classes=2, input_size=list(size)).eval()
    seen = [3 * size[0] * size[1]]
    pads = 0

    def new_memory(module, args, out):  # outputs that are not their input or a view of it
        ins = args[0] if isinstance(args[0], list) else [args[0]]
        if out.untyped_storage().data_ptr() not in {t.untyped_storage().data_ptr() for t in ins}:
            seen.append(out.numel())

    for layer in model.layers:
        layer.register_forward_hook(new_memory)
        if not getattr(layer, "even", True):
            layer.register_forward_pre_hook(
                lambda m, i: seen.append(
                    i[0].shape[1]
                    * (i[0].shape[2] + m.pad_left + m.pad_right[0])
                    * (i[0].shape[3] + m.pad_left + m.pad_right[1])
                )
            )
            pads += 1
    with torch.no_grad():
        model(torch.rand(1, 3, *size))
    layers = resolve_layers(config_sections(model.config))
    assert budget.activation_bytes(layers, size)[0] == 4 * sum(seen)
    assert pads == (1 if name == "yolov3-tiny" else 0)


def _measure(config: ModelConfig) -> dict[str, float]:
    layers = resolve_layers(config_sections(config))
    convs = [s.params for s in layers if s.kind == "convolutional"]
    pools = [s.params["size"] for s in layers if s.kind == "maxpool"] or [1]
    ups = [abs(s.params["stride"]) for s in layers if s.kind == "upsample"] or [1]
    return {
        "MAX_CFG_BYTES": len(config.cfg_text()),
        "MAX_LAYERS": len(layers),
        "MAX_FILTERS": max(p["filters"] for p in convs),
        "MAX_CHANNELS": max(s.channels for s in layers),
        "MAX_KERNEL_SIZE": max(p["size"] for p in convs),
        "MAX_POOL_SIZE": max(pools),
        "MAX_UPSAMPLE_STRIDE": max(ups),
        "MAX_INPUT_SIDE": max(config.input_size),
        "MAX_CLASSES": config.num_classes,
        "MAX_ANCHORS": len(config.anchors),
        "MAX_ANCHOR_SIDE": max(max(a) for a in config.anchors),
        "MAX_PARAMS": budget.param_count(layers),
        "MAX_ACTIVATION_BYTES": budget.activation_bytes(layers, config.input_size)[0],
    }


def test_every_zoo_network_is_inside_the_budget_with_headroom():
    """Each limit is at least 4x the largest value of the zoo at its own size, yolov4-p6 at 1280
    with 80 classes included, and those networks build (on the meta device: no memory)."""
    configs = [ModelConfig.load(n) for n in ZOO]
    configs.append(ModelConfig.load("yolov4-p6", num_classes=80, input_size=[1280, 1280]))
    largest = {name: 0.0 for name in budget.LIMITS}
    for config in configs:
        for name, value in _measure(config).items():
            largest[name] = max(largest[name], value)
    print({k: f"{v:,.0f} (limit {getattr(budget, k):,})" for k, v in largest.items()})
    for name, value in largest.items():
        assert getattr(budget, name) >= 4 * value, name
    with torch.device("meta"):
        p6 = build_model("yolov4-p6", num_classes=80, input_size=[1280, 1280])
    assert p6.config.input_size == (1280, 1280) and p6.num_classes == 80


def test_models_summary_cli_refuses_a_huge_net_size(child_results):
    """``python -m yolov4.models --cfg-file`` with a 32768-px [net]: a usage error naming the
    key, not a 12.9 GB input tensor (run in the capped child)."""
    kind, stderr = child_results["cli"]
    assert kind == "SystemExit(2)", f"{kind}: {stderr}"
    assert "[net] height: a side of 32768 pixels, over the limit 8,192" in stderr
