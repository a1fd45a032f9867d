"""Building blocks: darknet's ``[convolutional]`` layer (conv + optional BN + activation)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from yolov4.models.cfg import ACTIVATIONS

__all__ = [
    "ConvBnAct",
    "Mish",
    "Route",
    "Shortcut",
    "Multiply",
    "MaxPool",
    "LocalAvgPool",
    "GlobalAvgPool",
    "Upsample",
    "Reorg",
    "make_activation",
    "Pointwise",
    "BN_EPS",
    "LEAKY_SLOPE",
]

BN_EPS = 1e-5  # darknet normalize_cpu: sqrt(variance + .00001f)
LEAKY_SLOPE = 0.1  # darknet activation=leaky


class Mish(nn.Module):
    """``x * tanh(softplus(x))``, darknet's ``activation=mish``.

    With autograd recording, ``F.mish`` (exact gradients). Without it (inference), the same
    value as three vectorised in-place passes over a new tensor, ``tanh(log1p(exp(x))) * x``:
    about 3x faster on CPU than ``F.mish``, whose softplus is not vectorised. The input is never
    written to. For x > 88 ``exp`` overflows to inf,
    ``tanh(inf) = 1`` and the result is ``x``, as it should be; no NaN can arise.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.onnx.is_in_onnx_export():
            return mish_onnx(x)
        if (
            torch.is_grad_enabled()
            or torch.jit.is_tracing()
            or torch.jit.is_scripting()
            or torch.compiler.is_compiling()
        ):
            return F.mish(x)
        return torch.exp(x).log1p_().tanh_().mul_(x)


def mish_onnx(x: torch.Tensor) -> torch.Tensor:
    """Mish from ops every ONNX runtime vectorises: with ``r = sigmoid(-x)``,
    ``tanh(softplus(x)) = (1 - r^2) / (1 + r^2)`` (``1 + e^x = 1 / r``). No overflow for any x
    (``r`` is in [0, 1]); absolute error < 2e-6 against ``F.mish``. onnxruntime's ``Softplus``
    kernel is scalar code: the ``Softplus, Tanh, Mul`` form made yolov4@416 ~1.8x slower there
    than in PyTorch, more than half of it in Softplus."""
    r = torch.sigmoid(-x)
    r2 = r * r
    return x * (1 - r2) / (1 + r2)


# darknet's activations.h constants: selu_activate's scale and alpha, gelu_activate's tanh form
SELU_SCALE, SELU_ALPHA = 1.0507, 1.6732
GELU_A, GELU_B = 0.797885, 0.035677


class Pointwise(nn.Module):
    """One of darknet's pointwise activations (``src/activations.h`` / ``activations.c``) by its
    cfg name, with darknet's constants; autograd gives the training gradient."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.name
        if n == "relu6":  # darknet's GPU kernel (its CPU activate() has no case: 0)
            return x.clamp(0, 6)
        if n == "elu":
            return torch.where(x >= 0, x, (torch.exp(x.clamp(max=0)) - 1))
        if n == "selu":
            return SELU_SCALE * torch.where(x >= 0, x, SELU_ALPHA * (torch.exp(x.clamp(max=0)) - 1))
        if n == "gelu":
            return 0.5 * x * (1 + torch.tanh(GELU_A * x + GELU_B * x * x * x))
        if n == "hard_mish":  # hard_mish_yashas
            return torch.where(x > 0, x, torch.where(x > -2, x * x / 2 + x, torch.zeros_like(x)))
        if n == "hardtan":
            return x.clamp(-1, 1)
        return 2 * torch.sigmoid(x) - 1  # loggy


def make_activation(name: str) -> nn.Module:
    """Darknet activation by its cfg name (``src/activations.h``): ``linear``, ``leaky`` (slope
    0.1), ``relu``, ``logistic``, ``tanh``, ``mish``, ``swish`` (``x * logistic(x)``), and
    :class:`Pointwise`'s ``relu6``, ``elu``, ``selu``, ``gelu``, ``hard_mish``, ``hardtan``,
    ``loggy``."""
    if name == "mish":
        return Mish()
    if name == "leaky":
        return nn.LeakyReLU(LEAKY_SLOPE, inplace=True)
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "logistic":
        return nn.Sigmoid()
    if name == "tanh":
        return nn.Tanh()
    if name == "swish":
        return nn.SiLU(inplace=True)
    if name == "linear":
        return nn.Identity()
    if name in ACTIVATIONS:
        return Pointwise(name)
    raise ValueError(f"unknown activation {name!r}; expected one of {list(ACTIVATIONS)}")


class ConvBnAct(nn.Module):
    """Darknet's ``[convolutional]``: padding (default ``k // 2``, darknet's ``pad=1``),
    dilation, BN or bias, activation.

    ``(B, in_channels, H, W) -> (B, out_channels, H / stride, W / stride)`` (``stride``: one for
    both axes, or darknet's ``(stride_y, stride_x)``); the window starts
    ``padding * dilation`` cells before the map, as darknet's ``im2col_cpu_ext`` does.
    With ``bn=False`` the convolution carries a bias (darknet's linear head convs).
    ``fuse()`` folds BN into the convolution for inference; the outputs stay the same.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int | tuple[int, int] = 1,
        act: str = "leaky",
        bn: bool = True,
        bn_momentum: float = 0.03,
        groups: int = 1,
        padding: int | None = None,
        dilation: int = 1,
    ) -> None:
        super().__init__()
        self.act_name = act
        self.has_bn = bn
        pad = kernel_size // 2 if padding is None else padding
        self.conv = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            pad * dilation,
            dilation=dilation,
            groups=groups,
            bias=not bn,
        )
        self.bn = nn.BatchNorm2d(out_channels, eps=BN_EPS, momentum=bn_momentum) if bn else None
        self.act = make_activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return self.act(x)

    def darknet_tensors(self) -> list[tuple[str, torch.Tensor]]:
        """``(state_dict key suffix, tensor)`` in darknet's ``.weights`` order
        (``load_convolutional_weights``): BN ``beta, gamma, mean, var`` or the bias, then the
        kernel."""
        if self.bn is None and self.has_bn:
            raise RuntimeError("a fused convolution has no BN statistics to read or write")
        head = (
            [("bn.bias", self.bn.bias), ("bn.weight", self.bn.weight),
             ("bn.running_mean", self.bn.running_mean), ("bn.running_var", self.bn.running_var)]
            if self.has_bn
            else [("conv.bias", self.conv.bias)]
        )  # fmt: skip
        return [*head, ("conv.weight", self.conv.weight)]

    @property
    def is_fused(self) -> bool:
        return self.has_bn and self.bn is None

    @torch.no_grad()
    def fuse(self) -> None:
        """Fold BN (running statistics) into the convolution's weight and bias, in place."""
        if self.bn is None:
            return
        bn, conv = self.bn, self.conv
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        fused = nn.utils.skip_init(  # no random initialisation: both tensors are set below
            nn.Conv2d,
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            conv.stride,
            conv.padding,
            dilation=conv.dilation,
            groups=conv.groups,
            bias=True,
            device=conv.weight.device,
            dtype=conv.weight.dtype,
        )
        fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
        fused.bias.copy_(bn.bias - bn.running_mean * scale)
        self.conv, self.bn = fused, None


class Route(nn.Module):
    """Darknet's ``[route]``: concatenate the inputs along channels, each reduced to its
    ``group_id``-th of ``groups`` channel chunks (``yolov4-tiny``'s CSP split)."""

    def __init__(self, groups: int = 1, group_id: int = 0) -> None:
        super().__init__()
        self.groups, self.group_id = groups, group_id

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        if self.groups > 1:
            xs = [x.chunk(self.groups, 1)[self.group_id] for x in xs]
        return xs[0] if len(xs) == 1 else torch.cat(xs, 1)


# darknet's shortcut_multilayer_cpu: the epsilon in a weighted [shortcut]'s normalization
SHORTCUT_EPS = 0.0001


def _channels_as(o: torch.Tensor, c: int) -> torch.Tensor:
    """``o (B, C', H, W)`` as darknet's shortcut adds it to a ``(B, c, H, W)`` map, element by
    element as far as it has elements: its first ``c`` channels, or zeros past its own."""
    if o.shape[1] > c:
        return o[:, :c]
    if o.shape[1] < c:
        return F.pad(o, (0, 0, 0, 0, 0, c - o.shape[1]))
    return o


class Shortcut(nn.Module):
    """Darknet's ``[shortcut]``: the previous layer plus the ``from`` layers, then activation
    (a ``from`` map of other channels: its first channels, or on the first channels).

    Weighted (``weights_type``, ``shortcut_multilayer_cpu``): input ``k`` (0: the previous
    layer, then the ``from`` layers) times weight ``w[k]`` (``per_feature``: one per input,
    shape ``(n,)``; ``per_channel``: one per input and channel, ``(n, C)``; darknet starts them
    at 1), normalised over the inputs: ``relu``: ``relu(w) / (eps + sum relu(w))``;
    ``softmax``: ``exp(w - max) / (eps + sum exp(w - max))``; ``none``: as they are."""

    def __init__(
        self,
        act: str = "linear",
        weights_type: str = "none",
        normalization: str = "none",
        inputs: int = 2,
        channels: int = 0,
    ) -> None:
        super().__init__()
        self.act = make_activation(act)
        self.weights_type, self.normalization = weights_type, normalization
        shape = {"per_feature": (inputs,), "per_channel": (inputs, channels)}.get(weights_type)
        self.weights = nn.Parameter(torch.ones(shape)) if shape else None

    def forward(self, x: torch.Tensor, others: list[torch.Tensor]) -> torch.Tensor:
        others = [_channels_as(o, x.shape[1]) for o in others]
        if self.weights is None:
            for o in others:
                x = x + o
            return self.act(x)
        w = self.weights
        if self.normalization == "relu":
            w = torch.relu(w)
            w = w / (SHORTCUT_EPS + w.sum(0))
        elif self.normalization == "softmax":
            w = torch.exp(w - w.max(0).values)
            w = w / (SHORTCUT_EPS + w.sum(0))
        w = w.view(w.shape[0], 1, -1, 1, 1)  # (inputs, 1, C or 1, 1, 1)
        out = x * w[0]
        for k, o in enumerate(others, 1):
            out = out + o * w[k]
        return self.act(out)

    def darknet_tensors(self) -> list[tuple[str, torch.Tensor]]:
        """The ``.weights`` tensors (``load_shortcut_weights``): its weights, if weighted."""
        return [] if self.weights is None else [("weights", self.weights)]


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


class Multiply(nn.Module):
    """Darknet's ``[sam]`` (spatial attention) and ``[scale_channels]``: the previous layer
    times the ``from`` layer, element by element, then activation; the previous layer's
    ``(B, C, 1, 1)`` (per channel) or ``(B, 1, H, W)`` (per cell, ``scale_wh``) broadcast over
    the ``from`` layer's ``(B, C, H, W)`` for ``[scale_channels]``."""

    def __init__(self, act: str = "linear") -> None:
        super().__init__()
        self.act = make_activation(act)

    def forward(self, x: torch.Tensor, others: list[torch.Tensor]) -> torch.Tensor:
        return self.act(x * others[0])


class GlobalAvgPool(nn.Module):
    """Darknet's ``[avgpool]`` (``forward_avgpool_layer``): each channel's mean over the map,
    ``(B, C, H, W) -> (B, C, 1, 1)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3), keepdim=True)


class _Pool(nn.Module):
    """Darknet's pooling windows (``make_maxpool_layer``): ``size`` square, ``stride`` per axis
    ``(y, x)``, starting ``pad_left`` cells before the map and reaching ``pad_right`` ``(y, x)``
    cells past its bottom/right edge (negative: the last cells no window reaches);
    ``(B, C, H, W) -> (B, C, H / stride_y, W / stride_x)``."""

    def __init__(
        self,
        size: int,
        stride: int | tuple[int, int],
        pad_left: int,
        pad_right: int | tuple[int, int],
    ) -> None:
        super().__init__()
        self.size, self.stride = size, _pair(stride)
        self.pad_left, self.pad_right = pad_left, _pair(pad_right)
        self.even = self.pad_right == (pad_left, pad_left)  # torch's pool pads it itself

    def padded(self, x: torch.Tensor, value: float) -> torch.Tensor:
        (ry, rx), left = self.pad_right, self.pad_left
        return F.pad(x, (left, rx, left, ry), value=value)


class MaxPool(_Pool):
    """Darknet's ``[maxpool]``: out-of-map cells never win (``-inf``). Size 2 stride 1
    (yolov3-tiny) pads one cell on the right/bottom; size 5/9/13 stride 1 (SPP) pads evenly."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.even:  # max_pool2d's own padding is -inf
            return F.max_pool2d(x, self.size, self.stride, self.pad_left)
        return F.max_pool2d(self.padded(x, float("-inf")), self.size, self.stride)


class LocalAvgPool(_Pool):
    """Darknet's ``[local_avgpool]`` (``forward_local_avgpool_layer``): the mean of the window's
    cells inside the map (out-of-map cells neither add nor count)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.even:
            return F.avg_pool2d(x, self.size, self.stride, self.pad_left, count_include_pad=False)
        inside = self.padded(torch.ones_like(x[:, :1]), 0.0)
        mean = F.avg_pool2d(self.padded(x, 0.0), self.size, self.stride)
        return mean / F.avg_pool2d(inside, self.size, self.stride)


class Upsample(nn.Module):
    """Darknet's ``[upsample]`` (``upsample_cpu``): nearest neighbour times ``scale``,
    ``(B, C, H, W) -> (B, C, sH, sW)``; a negative ``stride`` ``-s`` is darknet's downsample,
    each ``s`` x ``s`` block summed times ``scale``: ``(B, C, H, W) -> (B, C, H / s, W / s)``."""

    def __init__(self, stride: int, scale: float = 1.0) -> None:
        super().__init__()
        self.stride, self.scale = stride, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride < 0:
            s = -self.stride
            return F.avg_pool2d(x, s) * (self.scale * s * s)
        x = F.interpolate(x, scale_factor=float(self.stride), mode="nearest")
        return x if self.scale == 1 else x * self.scale


class Reorg(nn.Module):
    """Darknet's ``[reorg]`` (``reorg_old_layer.c``) and ``[reorg3d]`` (``reorg_layer.c``): both
    call ``reorg_cpu`` with ``forward = reverse``; ``[reorg]`` passes it the input's sizes,
    ``[reorg3d]`` the output's. ``(B, C, H, W) -> (B, C * s^2, H / s, W / s)``, ``s`` the
    stride; with ``reverse``, ``(B, C / s^2, H * s, W * s)``.

    ``reorg_cpu`` with sizes ``(C', H', W')`` relates a small layout ``(C', H', W')`` to a large
    one ``(C' / s^2, H' * s, W' * s)`` of the same memory: small channel
    ``k = (dy * s + dx) * C' / s^2 + c`` of row ``j``, column ``i`` is large
    ``[c, j * s + dy, i * s + dx]``. ``forward=0`` reads the input's memory as the large layout
    and writes the small one, ``forward=1`` the other way; the result is read as the output's
    shape. ``[reorg3d]`` (and ``[reorg]`` reverse) is thus a plain space to depth (depth to
    space) with darknet's channel order, not torch's ``pixel_unshuffle``; ``[reorg]`` (and
    ``[reorg3d]`` reverse) reads the input's memory in another shape, mixing channels and
    blocks across the map (OpenCV's importer reproduces ``[reorg]``)."""

    def __init__(self, stride: int, reverse: bool = False, output_sizes: bool = False) -> None:
        super().__init__()
        self.stride, self.reverse, self.output_sizes = stride, reverse, output_sizes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stride
        _, c, h, w = x.shape
        out = (c // (s * s), h * s, w * s) if self.reverse else (c * s * s, h // s, w // s)
        big_c, small_h, small_w = out if self.output_sizes else (c, h, w)  # reorg_cpu's sizes
        c2 = big_c // (s * s)  # the large layout's channels
        if self.reverse:  # forward=1: small layout in, large out
            y = x.reshape(-1, s, s, c2, small_h, small_w).permute(0, 3, 4, 1, 5, 2)
        else:  # forward=0: large layout in, small out
            y = x.reshape(-1, c2, small_h, s, small_w, s).permute(0, 3, 5, 1, 2, 4)
        return y.reshape(-1, *out)
