"""Hostile and careless weights files: checked before anything is allocated or trusted.

Every file here is generated in the test (no binaries committed). Tensors that would be large are
stride-0 views of one element (``torch.zeros(()).expand(shape)``): ``torch.save`` stores a single
number, so a file can claim any shape while staying a few KB, as a hostile file would.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch

from yolov4 import CheckpointError, Predictor, build_model
from yolov4.core.checkpoint import FORMAT, load_checkpoint, save_checkpoint
from yolov4.core.files import STALE_TMP_AGE_S
from yolov4.core.pretrained import load_pretrained
from yolov4.models import budget
from yolov4.models.cfg import read_zoo_cfg

NAMES = ["circle", "square", "triangle"]
# classes: the most the budget admits (yolov4.models.budget.MAX_CLASSES), ~150x the weights of
# the 3-class file the tests claim it for
HUGE = 2000


@pytest.fixture(scope="module")
def tiny3():
    torch.manual_seed(0)
    return build_model("yolov4-tiny", num_classes=3).eval()


def weights_file(path, config, state_dict, class_names=None):
    """A ``yolov4.weights/1`` file written as is (save_checkpoint would refuse it)."""
    torch.save(
        {
            "format": FORMAT,
            "model": config,
            "state_dict": state_dict,
            "class_names": class_names,
            "preprocess": {},
            "metrics": {},
            "trained": {},
        },
        path,
    )
    return path


@pytest.fixture
def no_real_huge_model(monkeypatch):
    """Fail the test (instead of the machine) if a network of HUGE classes gets real memory."""
    import yolov4.models.yolov4 as yolo

    real_init = yolo.YOLOv4.__init__

    def guarded(self, config, *args, **kwargs):
        if config.num_classes >= HUGE and torch.empty(0).device.type != "meta":
            raise AssertionError(f"allocated a real network of {config.num_classes} classes")
        real_init(self, config, *args, **kwargs)

    monkeypatch.setattr(yolo.YOLOv4, "__init__", guarded)


# -- item 12: the stored config is checked before the network is allocated -----------------------
def test_config_that_does_not_fit_its_weights_is_refused_before_allocation(
    tmp_path, tiny3, no_real_huge_model
):
    config = {**tiny3.config.to_dict(), "num_classes": HUGE}
    path = weights_file(tmp_path / "claims.pt", config, tiny3.state_dict(), NAMES)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    msg = str(e.value)
    assert "claims.pt" in msg and f"num_classes={HUGE}" in msg
    assert "trained with num_classes=3" in msg  # what the weights really are


def test_weights_of_the_claimed_shape_but_no_data_are_refused(tmp_path, no_real_huge_model):
    """Consistent keys and shapes, but stride-0 tensors: the file holds a few bytes for a model
    of 30 GB. Refused from the file's size, before the network is built."""
    with torch.device("meta"):
        claimed = build_model("yolov4-tiny", num_classes=HUGE)
    sd = {
        k: torch.zeros((), dtype=v.dtype).expand(v.shape) for k, v in claimed.state_dict().items()
    }
    path = weights_file(tmp_path / "hollow.pt", claimed.config.to_dict(), sd)
    assert path.stat().st_size < 1_000_000
    with pytest.raises(CheckpointError, match=r"hollow.pt.*holds .* bytes of tensor data"):
        load_checkpoint(path)


def test_config_over_the_budget_is_refused_before_allocation(tmp_path, tiny3, no_real_huge_model):
    config = {**tiny3.config.to_dict(), "num_classes": 10**7}
    path = weights_file(tmp_path / "claims.pt", config, tiny3.state_dict(), NAMES)
    with pytest.raises(CheckpointError, match=r"claims.pt: .*10,000,000 classes, over the limit"):
        load_checkpoint(path)


# a cfg whose layers have no parameters: a few KB of weights, GBs at the first forward pass
# (appended after yolov4-tiny's last layer, the [yolo] 37, from its head conv 36 by a route,
# layer 38: a layer reading a [yolo] is refused; the absolute route indices stay valid)
FROM_HEAD = "\n[route]\nlayers=-2\n"
ROUTE_CHAIN = FROM_HEAD + "".join("\n[route]\nlayers=-1,-1\n" for _ in range(16))
POOL = FROM_HEAD + "\n[maxpool]\nsize=16000\nstride=1\n"


@pytest.mark.parametrize(
    "insert, names",
    [
        # layer 38 + k has 255 * 2**k channels (the stored cfg text's 80 classes): layer 46 is
        # the first over 32768
        (ROUTE_CHAIN, ["[route] layers: (layer 46)", "65,280 channels", "MAX_CHANNELS"]),
        (POOL, ["[maxpool] size: (layer 39)", "16000", "MAX_POOL_SIZE"]),
    ],
    ids=["route -1,-1 repeated", "maxpool size=16000"],
)
def test_hostile_cfg_inside_a_saved_checkpoint_is_refused_at_load(
    tmp_path, monkeypatch, insert, names
):
    """The file is written by save_checkpoint (limits raised while the parameter-free hostile
    network is built and saved), then read with the default limits: load_checkpoint and
    Predictor.from_checkpoint refuse it naming the layer and key, before any forward pass."""
    hostile = read_zoo_cfg("yolov4-tiny") + insert
    raised = {"MAX_CHANNELS": 1 << 40, "MAX_POOL_SIZE": 1 << 20, "MAX_ACTIVATION_BYTES": 1 << 60}
    with monkeypatch.context() as m:
        for name, value in raised.items():
            m.setattr(budget, name, value)
        model = build_model(cfg=hostile, num_classes=3, input_size=[64, 64])
        path = save_checkpoint(tmp_path / "hostile.pt", model, NAMES)
    assert path.stat().st_size < 30_000_000  # the weights of yolov4-tiny, nothing more
    for load in (load_checkpoint, Predictor.from_checkpoint):
        with pytest.raises(CheckpointError) as e:
            load(path)
        msg = str(e.value)
        assert "hostile.pt" in msg and all(n in msg for n in names), msg


def test_non_finite_weights_in_a_checkpoint_are_refused_naming_the_tensor(tmp_path, tiny3):
    sd = {k: v.clone() for k, v in tiny3.state_dict().items()}
    sd["layers.2.bn.running_var"][5] = float("nan")
    sd["layers.29.conv.weight"].view(-1)[0] = float("inf")
    with pytest.raises(CheckpointError, match="save_checkpoint: 2 tensor"):  # never written
        save_checkpoint(tmp_path / "nan.pt", tiny3, NAMES, state_dict=sd)
    path = save_checkpoint(tmp_path / "nan.pt", tiny3, NAMES)
    data = torch.load(path, weights_only=True)  # a file corrupted (or written) elsewhere
    data["state_dict"] = sd
    torch.save(data, path)
    for load in (load_checkpoint, Predictor.from_checkpoint):
        with pytest.raises(CheckpointError) as e:
            load(path)
        msg = str(e.value)
        assert "nan.pt: 2 tensor(s) hold non-finite values" in msg
        assert "layers.2.bn.running_var (1 of 64)" in msg and "layers.29.conv.weight (1 of" in msg
    model = build_model("yolov4-tiny", num_classes=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"layers.2.bn.running_var"):
        load_pretrained(model, path)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # untouched


def test_non_finite_counts_are_exact_and_large_finite_values_are_not_counted():
    """Finite values whose sum overflows (fp32, fp16) count as finite; NaN and both infinities
    are each counted, also where they cancel in a sum (inf + -inf)."""
    from yolov4.core.mismatch import nonfinite_tensors

    big = torch.full((4,), 3e38)
    half = torch.full((8,), 60000.0, dtype=torch.float16)
    mixed = torch.tensor([1.0, float("inf"), float("-inf"), float("nan"), 2.0])
    sd = {"big": big, "half": half, "mixed": mixed, "steps": torch.tensor([7])}
    assert nonfinite_tensors(sd) == {"mixed": 3}


def test_preprocess_size_over_the_activation_budget_is_refused(tmp_path, tiny3):
    path = save_checkpoint(tmp_path / "big.pt", tiny3, NAMES)
    data = torch.load(path, weights_only=True)
    data["preprocess"]["input_size"] = [8192, 8192]  # under the side limit, not the memory one
    torch.save(data, path)
    with pytest.raises(CheckpointError, match=r"big.pt: preprocess.input_size \[8192, 8192\]"):
        load_checkpoint(path)


# -- item 7 (checkpoint side): class names against num_classes ---------------------------------
@pytest.mark.parametrize("names", [["a", "b"], ["a", "b", "c", "d"]])
def test_class_name_count_must_equal_num_classes(tmp_path, tiny3, names):
    path = weights_file(tmp_path / "names.pt", tiny3.config.to_dict(), tiny3.state_dict(), names)
    with pytest.raises(
        CheckpointError, match=rf"names.pt has {len(names)} class names .* num_classes=3"
    ):
        load_checkpoint(path)


def test_lightning_ckpt_class_names_are_checked(tmp_path, tiny3):
    path = tmp_path / "last.ckpt"
    torch.save(
        {
            "pytorch-lightning_version": "2.6.0",
            "state_dict": {f"model.{k}": v for k, v in tiny3.state_dict().items()},
            "hyper_parameters": {"model": tiny3.config.to_dict(), "class_names": ["a"]},
        },
        path,
    )
    with pytest.raises(CheckpointError, match=r"1 class names .* num_classes=3"):
        load_checkpoint(path)


def test_writer_never_writes_what_the_reader_refuses(tmp_path, tiny3):
    """numpy scalars and arrays, 0-d and n-d tensors, tuples, nested dicts: all become builtins,
    so the file loads with weights_only=True."""
    path = save_checkpoint(
        tmp_path / "w.pt",
        tiny3,
        [np.str_("circle"), "square", "triangle"],
        preprocess={"input_size": (np.int64(64), np.int32(64)), "pad_value": np.uint8(114)},
        metrics={
            "mAP": np.float32(0.25),
            "n": np.int64(7),
            "ok": np.bool_(True),
            "per_class": {"circle": np.float16(0.5), "curve": np.arange(3, dtype=np.float32)},
            "AR": torch.tensor([0.5, 0.25]),
        },
        trained={"epoch": np.int64(2), "category_ids": np.array([1, 2, 3])},
    )
    raw = torch.load(path, weights_only=True)
    assert raw["metrics"] == {
        "mAP": 0.25,
        "n": 7,
        "ok": True,
        "per_class": {"circle": 0.5, "curve": [0.0, 1.0, 2.0]},
        "AR": [0.5, 0.25],
    }
    assert type(raw["metrics"]["n"]) is int and type(raw["metrics"]["ok"]) is bool
    assert raw["trained"] == {"epoch": 2, "category_ids": [1, 2, 3]}
    assert raw["preprocess"]["input_size"] == [64, 64] and raw["preprocess"]["pad_value"] == 114
    assert type(raw["preprocess"]["pad_value"]) is int
    assert load_checkpoint(path).class_names == NAMES


# -- item 14: a write killed mid-way leaves a temporary file; the next save removes it ----------
def test_stale_temporary_files_are_removed_by_the_next_save(tmp_path, tiny3):
    stale = tmp_path / ".best.pt.k1ll3d__.tmp"  # what a kill -9 during torch.save leaves
    stale.write_bytes(b"partial")
    old = time.time() - 2 * STALE_TMP_AGE_S
    os.utime(stale, (old, old))
    fresh = tmp_path / ".best.pt.wr1t1ng_.tmp"  # another writer, right now
    fresh.write_bytes(b"partial")
    other = tmp_path / ".notes.txt.abcdefgh.tmp"  # not ours: another file's name
    other.write_bytes(b"x")
    os.utime(other, (old, old))
    save_checkpoint(tmp_path / "best.pt", tiny3, NAMES)
    assert not stale.exists()
    assert fresh.exists() and other.exists()
    assert load_checkpoint(tmp_path / "best.pt").class_names == NAMES


@pytest.mark.skipif(os.name != "posix", reason="advisory locks (fcntl) are POSIX")
def test_a_locked_temporary_file_is_left_to_its_writer(tmp_path, tiny3):
    """A writer holds a lock on its temporary file for the whole write: even an old one (a slow
    disk, a huge model) is not removed while the lock is held."""
    import fcntl

    busy = tmp_path / ".best.pt.sl0wd1sk.tmp"
    with open(busy, "wb") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        old = time.time() - 2 * STALE_TMP_AGE_S
        os.utime(busy, (old, old))
        save_checkpoint(tmp_path / "best.pt", tiny3, NAMES)
        assert busy.exists()
