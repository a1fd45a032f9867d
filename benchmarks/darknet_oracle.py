"""The project's YoloLoss against darknet itself: per-component agreement of the training signal.

    python benchmarks/darknet_oracle.py /tmp/dkwork/dk_oracle [--o2 /tmp/dkwork/dk_oracle_O2]
        [--models yolov4-tiny yolov4] [--size 256] [--seeds 0 1 2] [--classes 4] [--new-coords]
        [--counters-per-class 400,30,7,90] [--name darknet_oracle_zoo]

``dk_oracle`` is the driver of ../shared/tools/darknet-oracle (AlexeyAB darknet, CPU build; build
it with that folder's build.sh). It is run in "maps mode": each ``[yolo]`` layer's forward is fed
the same raw head maps that ``YoloLoss`` sees, with the same truths, and its ``l.delta`` (minus the
gradient of darknet's loss w.r.t. the map, per image) is compared with ``-batch * d(loss)/d(map)``
of the project's loss, for ``box_gradient="darknet"`` and ``"exact"``.

Any zoo model works (``--models yolov3-tiny yolov4-csp yolov4-p6 ...``): darknet is given a cfg
made of that model's own ``[yolo]`` sections, keys verbatim (``classes`` set to ``--classes``),
in ascending stride order, each behind a 1x1 ``[convolutional]`` whose stride gives the head's
grid; in maps mode darknet runs only the ``[yolo]`` layers, so no network is built on either
side (the project's loss is ``YoloLoss.from_config(ModelConfig.load(name, ...))``). Every
per-head key (``obj_normalizer``, ``max_delta``, ``objectness_smooth``, ...), ``iou_loss=mse``
(the YOLOv3 cfgs) and ``new_coords`` (the Scaled-YOLOv4 cfgs) is thus darknet's own reading.

Cases, per model and seed: one image (``b1``), one image with ``label_smooth_eps=0.1`` (``ls``),
two images (``b2``). Each image has 16 truths: random sizes (2 px to most of the image), boxes
on the border, tiny boxes, two boxes of different classes in the same cell; the maps are random,
with predictions planted near half of the truths (jittered so that their IoU falls either side of
``ignore_thresh``, class confidence either side of 0.25) so that the ignore rule is exercised.

Per component: ``assignment`` (positive slots: those with a non-zero box delta, darknet's vs the
project's), ``ignore`` (non-positive slots whose objectness delta is 0; with ``objectness_smooth``
a slot is pulled towards its IoU instead, so none is), then x, y, w, h, obj, cls: the
median (and 5-95 %) of project / darknet over the positive slots where darknet's delta is
non-zero, and the largest absolute difference over all slots (``max_rel``: that over the largest
darknet value of the component; the table's last column is the largest over components). With
``--o2`` the -O2 build's deltas are compared with the -Ofast build's (darknet's own float noise,
in brackets). Then darknet's charted cost (``get_network_cost`` / batch, from the dumped ``l.cost``
of each ``[yolo]`` layer) against ``YoloLoss.darknet_cost`` on the same maps, as ratios. Prints
three tables and writes benchmarks/results/<name>.json (default ``darknet_oracle``; or the
``--name`` path).

A model with ``new_coords=1`` (or any with ``--new-coords``, which also sets ``scale_x_y=2``):
darknet's layer is fed ``sigmoid`` of the maps (what its ``activation=logistic`` conv would give
it) and its ``l.delta`` is multiplied by ``s * (1 - s)`` (that conv's backward) before the
comparison; planted sizes use ``4 * sigmoid(t)^2``. ``--new-coords`` writes
darknet_oracle_new_coords.json by default.

``--counters-per-class N_0,...,N_C-1`` (one count per class of ``--classes``) puts darknet's class
balance key in every ``[yolo]`` section of darknet's cfg and in the project's model config
(``model.counters_per_class``); the multipliers ``max(N) / N_c`` (capped at ``max_delta``) then
scale the class, objectness and box deltas, and ``cls_normalizer`` acts. The ``cls+`` column is
the class deltas darknet makes positive (a target's own class: the ones the multipliers scale);
the default results file is darknet_oracle_counters.json.

``cls_normalizer`` (0.5 in the Scaled-YOLOv4 cfgs) is inert in darknet without
``counters_per_class``; ``YoloLoss.from_config`` passes 1.0 for it then, as darknet acts (see
:mod:`yolov4.loss`). ``--set key=value`` overrides a model config key on the project's side only
(``--set counters_per_class=null`` with ``--counters-per-class``: the control without balance).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch
from common import add_out_argument, machine_info, save

from yolov4.loss import YoloLoss, darknet_cost
from yolov4.models.cfg import parse_cfg
from yolov4.models.config import ModelConfig, yolo_heads

COMPONENTS = ("x", "y", "w", "h", "obj", "cls", "cls+")
MAX_BOXES = 200  # darknet's [yolo] max default: the truth buffer is batch x 200 x 6
CASES = {"b1": (1, 0.0), "ls": (1, 0.1), "b2": (2, 0.0)}  # name: (batch, label_smooth_eps)


def darknet_cfg(config, size: int, batch: int, label_smooth_eps: float, yolo_keys: dict) -> str:
    """A darknet cfg of ``config``'s ``[yolo]`` sections only (its cfg's keys verbatim, ascending
    stride, ``classes`` and ``yolo_keys`` set), each after a 1x1 conv giving the head's grid."""
    sections = parse_cfg(config.cfg_text())
    filters = config.num_anchors * (5 + config.num_classes)
    lines = ["[net]", f"batch={batch}", "subdivisions=1", f"width={size}", f"height={size}"]
    lines += ["channels=3", ""]
    prev = 1
    for stride, index in zip(config.strides, yolo_heads(sections), strict=True):
        lines += ["[convolutional]", f"filters={filters}", "size=1", f"stride={stride // prev}"]
        lines += ["pad=0", "activation=linear", ""]
        prev = stride
        options = {**sections[index].options, "classes": str(config.num_classes), **yolo_keys}
        if label_smooth_eps:
            options["label_smooth_eps"] = str(label_smooth_eps)
        lines += ["[yolo]", *(f"{k}={v}" for k, v in options.items()), ""]
    return "\n".join(lines)


def make_truths(rng: np.random.Generator, classes: int, n: int = 16) -> np.ndarray:
    """``(n, 5)`` float32 ``[cx, cy, w, h, class]`` normalised: random, border, tiny, same-cell."""
    rows = []
    for k in range(n):
        w, h = np.exp(rng.uniform(np.log(0.02), np.log(0.8), 2))
        cx, cy = rng.uniform(0.02, 0.98, 2)
        if k % 8 == 1:  # on the border, sticking out
            cx = rng.choice([rng.uniform(0.002, 0.02), rng.uniform(0.98, 0.998)])
        elif k % 8 == 2:  # tiny
            w, h = rng.uniform(2, 5, 2) / 256
        elif k % 8 == 3 and rows:  # same cell (any head) as the previous box, another class
            cx, cy = rows[-1][0] + rng.uniform(-2e-3, 2e-3), rows[-1][1] + rng.uniform(-2e-3, 2e-3)
        rows.append([cx, cy, w, h, rng.integers(classes)])
    return np.asarray(rows, dtype=np.float32)


def make_maps(rng, config, size, batch, truths, new_coords=False) -> list[np.ndarray]:
    """Raw head maps ``(B, A * (5 + C), H, W)`` per level (ascending stride), float32: random,
    with predictions planted near half of the truths (same cell, each anchor of the level)."""
    na, c = len(config.masks[0]), config.num_classes
    maps = []
    for level, stride in enumerate(config.strides):
        hw = size // stride
        m = rng.normal(0.0, 1.0, (batch, na, 5 + c, hw, hw))
        m[:, :, 2:4] *= 0.5
        m[:, :, 4] = rng.normal(-2.0, 2.0, m[:, :, 4].shape)
        m[:, :, 5:] = rng.normal(-1.5, 1.5, m[:, :, 5:].shape)
        g = config.scale_x_y[level]
        for b in range(batch):
            for cx, cy, w, h, _ in truths[b][::2]:
                i, j = min(int(cx * hw), hw - 1), min(int(cy * hw), hw - 1)
                for a, anchor in enumerate(config.masks[level]):
                    aw, ah = config.anchors[anchor]
                    px = cx + rng.uniform(-0.03, 0.03) * w
                    py = cy + rng.uniform(-0.03, 0.03) * h
                    fx = np.clip((px * hw - i + (g - 1) / 2) / g, 1e-4, 1 - 1e-4)
                    fy = np.clip((py * hw - j + (g - 1) / 2) / g, 1e-4, 1 - 1e-4)
                    m[b, a, 0, j, i], m[b, a, 1, j, i] = (
                        math.log(fx / (1 - fx)),
                        math.log(fy / (1 - fy)),
                    )
                    jw, jh = rng.uniform(0.72, 1.3, 2)  # IoU with the truth ~0.55-1 (never 1)
                    rw, rh = w * jw * size / aw, h * jh * size / ah
                    if new_coords:  # 4 * sigmoid(t)^2 = r, within what new_coords can reach
                        fw, fh = (
                            float(np.clip(math.sqrt(r / 4), 1e-3, 1 - 1e-3)) for r in (rw, rh)
                        )
                        rw, rh = fw / (1 - fw), fh / (1 - fh)
                    m[b, a, 2, j, i] = math.log(rw)
                    m[b, a, 3, j, i] = math.log(rh)
        maps.append(m.reshape(batch, na * (5 + c), hw, hw).astype(np.float32))
    return maps


def run_darknet(binary: str, cfg: str, maps_cfg_order, truth_buf, batch, size, work: Path):
    (work / "net.cfg").write_text(cfg)
    np.zeros((batch, 3, size, size), np.float32).tofile(work / "input.bin")
    truth_buf.astype(np.float32).tofile(work / "truth.bin")
    np.concatenate([m.ravel() for m in maps_cfg_order]).astype(np.float32).tofile(work / "maps.bin")
    out = work / "out"
    out.mkdir(exist_ok=True)
    args = [binary, str(work / "net.cfg"), "-", str(work / "input.bin"), str(work / "truth.bin")]
    subprocess.run(
        [*args, str(out), str(work / "maps.bin")], check=True, capture_output=True, text=True
    )
    meta = [line.split() for line in (out / "meta.txt").read_text().splitlines()[1:]]
    deltas, costs = [], []
    for k, fields in enumerate(meta):
        mask = [int(v) for v in fields[fields.index("mask") + 1 : fields.index("biases")]]
        deltas.append((mask, np.fromfile(out / f"yolo{k}_delta.bin", np.float32)))
        costs.append(float(fields[fields.index("cost") + 1]))
    # darknet's charted loss: get_network_cost (mean of l.cost over layers) / batch
    return deltas, sum(costs) / len(costs) / batch


def project_grads(config, maps, targets, label_smoothing, box_gradient) -> list[np.ndarray]:
    loss_fn = YoloLoss.from_config(config, label_smoothing, box_gradient)
    ts = [torch.from_numpy(m).requires_grad_() for m in maps]
    loss_fn(ts, targets).total.backward()
    return [(-ts[0].shape[0] * t.grad).numpy() for t in ts]


def split(arr: np.ndarray, batch: int, na: int, c: int) -> dict[str, np.ndarray]:
    """``(B, A*(5+C), H, W)`` -> per component ``(B, A, [C,] H, W)`` float64."""
    a = arr.reshape(batch, na, 5 + c, *arr.shape[-2:]).astype(np.float64)
    d = {name: a[:, :, k] for k, name in enumerate(COMPONENTS[:5])}
    d["cls"] = a[:, :, 5:]
    d["cls+"] = a[:, :, 5:]  # Tally.add keeps those darknet makes positive
    return d


class Tally:
    def __init__(self) -> None:
        self.pos_mismatch = self.ign_mismatch = self.positives = self.ignored = 0
        self.ratios = {k: [] for k in COMPONENTS}
        self.max_abs = dict.fromkeys(COMPONENTS, 0.0)
        self.max_dk = dict.fromkeys(COMPONENTS, 0.0)
        self.noise = dict.fromkeys(COMPONENTS, None)

    def add(self, dk: dict, pr: dict, dk2: dict | None = None) -> None:
        dk_pos = (dk["x"] != 0) | (dk["y"] != 0) | (dk["w"] != 0) | (dk["h"] != 0)
        pr_pos = (pr["x"] != 0) | (pr["y"] != 0) | (pr["w"] != 0) | (pr["h"] != 0)
        self.pos_mismatch += int((dk_pos != pr_pos).sum())
        self.positives += int(dk_pos.sum())
        neg = ~dk_pos & ~pr_pos
        dk_ign, pr_ign = neg & (dk["obj"] == 0), neg & (pr["obj"] == 0)
        self.ign_mismatch += int((dk_ign != pr_ign).sum())
        self.ignored += int(dk_ign.sum())
        both = dk_pos & pr_pos
        for k in COMPONENTS:
            d, p = dk[k], pr[k]
            sel = both[:, :, None] if k.startswith("cls") else both
            sel = np.broadcast_to(sel, d.shape) & (np.abs(d) > 1e-12)
            if k == "cls+":
                sel = sel & (dk["cls"] > 0)
            self.ratios[k].extend((p[sel] / d[sel]).tolist())
            self.max_abs[k] = max(self.max_abs[k], float(np.abs(p - d).max()))
            self.max_dk[k] = max(self.max_dk[k], float(np.abs(d).max()))
            if dk2 is not None:
                self.noise[k] = max(self.noise[k] or 0.0, float(np.abs(dk2[k] - d).max()))

    def summary(self) -> dict:
        out = {
            "positives": self.positives,
            "assignment_mismatches": self.pos_mismatch,
            "ignored": self.ignored,
            "ignore_mismatches": self.ign_mismatch,
        }
        for k in COMPONENTS:
            r = np.asarray(self.ratios[k])
            out[k] = {
                "n": int(r.size),
                "median_ratio": float(np.median(r)) if r.size else None,
                "p5_ratio": float(np.percentile(r, 5)) if r.size else None,
                "p95_ratio": float(np.percentile(r, 95)) if r.size else None,
                "max_abs_diff": self.max_abs[k],
                "max_rel": self.max_abs[k] / self.max_dk[k] if self.max_dk[k] else 0.0,
                "darknet_O2_vs_Ofast_max_abs": self.noise[k],
            }
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dk_oracle", help="path to the dk_oracle binary (darknet-oracle/build.sh)")
    ap.add_argument("--o2", help="the -O2 build (dk_oracle_O2): darknet's own float noise")
    ap.add_argument("--models", nargs="+", default=["yolov4-tiny", "yolov4"])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--classes", type=int, default=4)
    ap.add_argument("--new-coords", action="store_true", help="[yolo] new_coords=1, scale_x_y=2")
    ap.add_argument(
        "--counters-per-class",
        metavar="N0,N1,...",
        help="[yolo] counters_per_class for darknet and the project (one count per class)",
    )
    add_out_argument(
        ap,
        "--name",
        None,
        when="default darknet_oracle[_new_coords] or darknet_oracle_counters by the options; ",
    )
    ap.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="KEY=JSON",
        help="model config overrides for the project's loss only (darknet keeps the cfg's), "
        "e.g. cls_normalizer=1.0: darknet ignores cls_normalizer without counters_per_class",
    )
    args = ap.parse_args()
    sigmoid = lambda v: 1 / (1 + np.exp(-v.astype(np.float64)))  # noqa: E731
    torch.set_num_threads(max(1, torch.get_num_threads()))

    results = {}
    rows = []
    for name in args.models:
        extra = {"new_coords": True, "scale_x_y": 2.0} if args.new_coords else {}
        yolo_keys = {"new_coords": "1", "scale_x_y": "2.0"} if args.new_coords else {}
        if args.counters_per_class:
            extra["counters_per_class"] = [int(v) for v in args.counters_per_class.split(",")]
            yolo_keys["counters_per_class"] = args.counters_per_class
        extra |= {k: json.loads(v) for k, v in (kv.split("=", 1) for kv in args.set)}
        config = ModelConfig.load(
            name, num_classes=args.classes, input_size=[args.size] * 2, **extra
        )
        na, c = config.num_anchors, config.num_classes
        for case, (batch, eps) in CASES.items():
            tallies = {bg: Tally() for bg in ("darknet", "exact")}
            costs = {bg: [] for bg in tallies}
            for seed in args.seeds:
                rng = np.random.default_rng(1000 * seed + batch + int(eps * 100))
                truths = [make_truths(rng, c) for _ in range(batch)]
                maps = make_maps(rng, config, args.size, batch, truths, config.new_coords)
                buf = np.zeros((batch, MAX_BOXES, 6), np.float32)
                rows_t = []
                for b, t in enumerate(truths):
                    buf[b, : len(t), :5] = t
                    cx, cy, w, h = (t[:, :4].astype(np.float64) * args.size).T
                    rows_t.append(
                        np.stack(
                            [np.full_like(cx, b), t[:, 4], cx - w / 2, cy - h / 2, cx + w / 2,
                             cy + h / 2], 1
                        )
                    )  # fmt: skip
                targets = torch.from_numpy(np.concatenate(rows_t)).float()
                cfg = darknet_cfg(config, args.size, batch, eps, yolo_keys)
                # with new_coords the logistic conv's output is the layer's input
                dk_maps = (
                    [sigmoid(m).astype(np.float32) for m in maps] if config.new_coords else maps
                )
                with tempfile.TemporaryDirectory() as tmp:
                    dk, dk_cost = run_darknet(
                        args.dk_oracle, cfg, dk_maps, buf, batch, args.size, Path(tmp)
                    )
                    dk2 = None
                    if args.o2:
                        dk2, _ = run_darknet(
                            args.o2, cfg, dk_maps, buf, batch, args.size, Path(tmp)
                        )
                # the cfg's [yolo] layers are the project's heads, in the same order
                assert [mk for mk, _ in dk] == [list(m) for m in config.masks], dk
                dk_deltas = [d for _, d in dk]
                dk2_deltas = [d for _, d in dk2] if dk2 else None
                if config.new_coords:  # through the logistic conv's backward: * s (1 - s)
                    s_ = [sigmoid(m).astype(np.float32).ravel() for m in maps]
                    dk_deltas = [d * (s * (1 - s)) for d, s in zip(dk_deltas, s_, strict=True)]
                    if dk2_deltas:
                        dk2_deltas = [
                            d * (s * (1 - s)) for d, s in zip(dk2_deltas, s_, strict=True)
                        ]
                for bg, tally in tallies.items():
                    loss_fn = YoloLoss.from_config(config, eps, bg)
                    pr_cost = float(
                        darknet_cost(loss_fn, [torch.from_numpy(m) for m in maps], targets)
                    )
                    costs[bg].append((pr_cost, dk_cost))
                    grads = project_grads(config, maps, targets, eps, bg)
                    for level, g in enumerate(grads):
                        d = dk_deltas[level].reshape(g.shape)
                        d2 = dk2_deltas[level] if dk2_deltas else None
                        tally.add(
                            split(d, batch, na, c),
                            split(g, batch, na, c),
                            None if d2 is None else split(d2.reshape(g.shape), batch, na, c),
                        )
            for bg, tally in tallies.items():
                s = tally.summary()
                s["darknet_cost"] = {
                    "project": [p_ for p_, _ in costs[bg]],
                    "darknet": [d_ for _, d_ in costs[bg]],
                    "ratios": [p_ / d_ for p_, d_ in costs[bg]],
                }
                results[f"{name}/{case}/{bg}"] = s
                rows.append((name, case, bg, s))

    print("median project/darknet over positives (p5-p95 for w, h); asg/ig!: slot mismatches")
    head = (
        f"{'model':18s} {'case':4s} {'box_grad':8s} {'pos':>4s} {'asg':>3s} {'ign':>4s} {'ig!':>3s}"
    )
    print(head + "".join(f" {k:>17s}" if k in "wh" else f" {k:>7s}" for k in COMPONENTS))
    for name, case, bg, s in rows:
        line = f"{name:18s} {case:4s} {bg:8s} {s['positives']:4d} {s['assignment_mismatches']:3d}"
        line += f" {s['ignored']:4d} {s['ignore_mismatches']:3d}"
        for k in COMPONENTS:
            q = s[k]
            if k in "wh":
                line += f" {q['median_ratio']:.4f} ({q['p5_ratio']:.2f}-{q['p95_ratio']:.2f})"
            else:
                line += f" {q['median_ratio']:7.4f}"
        print(line)
    print("\nmax |project - darknet| over all slots [darknet -O2 vs -Ofast]")
    print(head[:33] + "".join(f" {k:>17s}" for k in COMPONENTS) + "  max_rel")
    for name, case, bg, s in rows:
        line = f"{name:18s} {case:4s} {bg:8s}"
        for k in COMPONENTS:
            noise = s[k]["darknet_O2_vs_Ofast_max_abs"]
            line += f" {s[k]['max_abs_diff']:7.1e} [{'-' if noise is None else f'{noise:.1e}':>7s}]"
        print(line + f"  {max(s[k]['max_rel'] for k in COMPONENTS):7.1e}")
    print(
        "\ndarknet's charted cost (mean l.cost over [yolo] layers / batch): project/darknet per seed"
    )
    for name, case, bg, s in rows:
        q = s["darknet_cost"]
        line = f"{name:18s} {case:4s} {bg:8s} darknet " + " ".join(
            f"{v:9.4f}" for v in q["darknet"]
        )
        print(line + "  ratio " + " ".join(f"{r:.6f}" for r in q["ratios"]))
    default_name = "darknet_oracle_new_coords" if args.new_coords else "darknet_oracle"
    path = save(
        args.name or ("darknet_oracle_counters" if args.counters_per_class else default_name),
        {
            "new_coords": args.new_coords,
            "counters_per_class": args.counters_per_class,
            "models": args.models,
            "project_overrides": args.set,
            "machine": machine_info(),
            "dk_oracle": str(Path(args.dk_oracle).resolve()),
            "size": args.size,
            "seeds": args.seeds,
            "classes": args.classes,
            "cases": {k: {"batch": b, "label_smooth_eps": e} for k, (b, e) in CASES.items()},
            "results": results,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
