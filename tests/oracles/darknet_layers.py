"""Darknet's forward pass of single layers, transcribed loop for loop from AlexeyAB darknet (CPU
path): ``src/convolutional_layer.c`` ``forward_convolutional_layer`` with ``src/im2col.c``
``im2col_cpu_ext`` and ``gemm``, ``src/batchnorm_layer.c`` (inference: rolling statistics),
``src/activations.c``. The reference for layers and keys OpenCV's importer does not run as
darknet does (``dilation``, ``stride_x``/``stride_y``). One image, numpy float64."""

from __future__ import annotations

import numpy as np

LEAKY = 0.1  # activations.c leaky_activate


def conv_out_size(size_in: int, size: int, pad: int, stride: int) -> int:
    """convolutional_layer.c convolutional_out_height / _width: no dilation in it."""
    return (size_in + 2 * pad - size) // stride + 1


def im2col_cpu_ext(im, channels, height, width, kernel, pad, stride_h, stride_w, dilation):
    """im2col.c im2col_cpu_ext: ``(channels * kernel * kernel, out_h * out_w)`` columns; a tap
    outside the map reads 0. Its own output size counts the dilation."""
    out_h = (height + 2 * pad - (dilation * (kernel - 1) + 1)) // stride_h + 1
    out_w = (width + 2 * pad - (dilation * (kernel - 1) + 1)) // stride_w + 1
    col = np.zeros((channels * kernel * kernel, out_h * out_w))
    row = 0
    for c in range(channels):
        for kr in range(kernel):
            for kc in range(kernel):
                for oy in range(out_h):
                    iy = -pad + kr * dilation + oy * stride_h
                    for ox in range(out_w):
                        ix = -pad + kc * dilation + ox * stride_w
                        if 0 <= iy < height and 0 <= ix < width:
                            col[row, oy * out_w + ox] = im[c, iy, ix]
                row += 1
    return col, out_h, out_w


# activations.h's inline *_activate and *_gradient (the gradient of the output y, hard_mish's of
# the input), and activations.c hard_mish_yashas(_grad), element by element
ACTIVATE = {
    "relu6": lambda x: min(max(x, 0), 6),
    "elu": lambda x: (x >= 0) * x + (x < 0) * (np.exp(x) - 1),
    "selu": lambda x: (x >= 0) * 1.0507 * x + (x < 0) * 1.0507 * 1.6732 * (np.exp(x) - 1),
    "gelu": lambda x: 0.5 * x * (1 + np.tanh(0.797885 * x + 0.035677 * x**3)),
    "hard_mish": lambda x: x if x > 0 else x * x / 2 + x if x > -2 else 0.0,
    "hardtan": lambda x: -1.0 if x < -1 else 1.0 if x > 1 else x,
    "loggy": lambda x: 2 / (1 + np.exp(-x)) - 1,
}
GRADIENT = {
    "relu6": lambda y: float(0 < y < 6),
    "elu": lambda y: (y >= 0) + (y < 0) * (y + 1),
    "selu": lambda y: (y >= 0) * 1.0507 + (y < 0) * (y + 1.0507 * 1.6732),
    "gelu": lambda y: (
        0.5 * np.tanh(0.0356774 * y**3 + 0.797885 * y)
        + (0.0535161 * y**3 + 0.398942 * y) / np.cosh(0.0356774 * y**3 + 0.797885 * y) ** 2
        + 0.5
    ),
    "hard_mish": lambda x: 1.0 if x > 0 else x + 1 if x > -2 else 0.0,
    "hardtan": lambda y: float(-1 < y < 1),
    "loggy": lambda y: 2 * (1 - (y + 1) / 2) * (y + 1) / 2,
}


def activate(x: np.ndarray, activation: str) -> np.ndarray:
    if activation == "linear":
        return x
    if activation == "leaky":
        return np.where(x > 0, x, LEAKY * x)
    if activation == "logistic":
        return 1 / (1 + np.exp(-x))
    if activation in ACTIVATE:
        return np.vectorize(ACTIVATE[activation], otypes=[float])(x)
    raise ValueError(f"activation {activation!r} is not transcribed")


def forward_convolutional(
    x: np.ndarray,
    weights: np.ndarray,
    *,
    size: int,
    pad: int,
    stride_x: int,
    stride_y: int,
    dilation: int = 1,
    groups: int = 1,
    biases: np.ndarray,
    bn: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    activation: str = "linear",
) -> np.ndarray:
    """forward_convolutional_layer for one image ``x (c, h, w)``: darknet sizes the output
    with :func:`conv_out_size` and fills it with the gemm of the dilated columns (padding
    ``pad * dilation``); when the two sizes differ darknet writes past its buffers, which this
    refuses. ``weights (n, c / groups, size, size)``; ``bn``: ``(scales, rolling_mean,
    rolling_variance)`` (normalize_cpu with .00001f, scale_bias), then ``biases``."""
    c, h, w = x.shape
    n = weights.shape[0]
    out_h, out_w = conv_out_size(h, size, pad, stride_y), conv_out_size(w, size, pad, stride_x)
    out = np.zeros((n, out_h * out_w))
    per = c // groups
    for j in range(groups):
        im = x[j * per : (j + 1) * per]
        if size == 1 and stride_x == 1 and dilation == 1:  # l.stride is stride_x: b = im
            # the map itself as the (k, n) matrix of the gemm (row stride out_h * out_w): what
            # the CPU path reads for stride_y > 1 too (cuDNN, darknet's GPU path, strides y)
            col = im.reshape(-1)[: per * out_h * out_w].reshape(per, out_h * out_w)
            ch, cw = out_h, out_w
        else:
            col, ch, cw = im2col_cpu_ext(
                im, per, h, w, size, pad * dilation, stride_y, stride_x, dilation
            )
        if (ch, cw) != (out_h, out_w):
            raise ValueError(f"darknet's map {out_h}x{out_w}, its columns {ch}x{cw}")
        a = weights[j * n // groups : (j + 1) * n // groups].reshape(n // groups, -1)
        out[j * n // groups : (j + 1) * n // groups] += a @ col  # gemm(0, 0, m, n, k, 1, ...)
    out = out.reshape(n, out_h, out_w)
    if bn is not None:
        scales, mean, var = (v.reshape(-1, 1, 1) for v in bn)
        out = (out - mean) / np.sqrt(var + 0.00001) * scales
    return activate(out + biases.reshape(-1, 1, 1), activation)


def forward_pool(x: np.ndarray, *, size: int, stride_x: int, stride_y: int, padding: int,
                 average: bool) -> np.ndarray:  # fmt: skip
    """maxpool_layer.c forward_maxpool_layer (its loop path, which the AVX path equals) and
    forward_local_avgpool_layer for one image ``x (c, h, w)``: ``out_w = (w + padding - size)
    / stride_x + 1``, window offset ``-padding / 2``; cells outside the map are skipped (the
    max starts at -FLT_MAX; the average divides by the cells counted)."""
    c, h, w = x.shape
    out_h, out_w = (h + padding - size) // stride_y + 1, (w + padding - size) // stride_x + 1
    offset = -(padding // 2)
    out = np.zeros((c, out_h, out_w))
    for k in range(c):
        for i in range(out_h):
            for j in range(out_w):
                best, total, counter = -np.finfo(np.float32).max, 0.0, 0
                for n in range(size):
                    for m in range(size):
                        cur_h, cur_w = offset + i * stride_y + n, offset + j * stride_x + m
                        if 0 <= cur_h < h and 0 <= cur_w < w:
                            best = max(best, x[k, cur_h, cur_w])
                            total += x[k, cur_h, cur_w]
                            counter += 1
                out[k, i, j] = total / counter if average else best
    return out


def upsample_cpu(src, w, h, c, stride, forward, scale, out) -> None:
    """blas.c upsample_cpu (one image, flat arrays): ``forward``: ``out = scale * in`` cell by
    cell of the ``stride`` times larger map; else ``in += scale * out`` summed over each
    block."""
    for k in range(c):
        for j in range(h * stride):
            for i in range(w * stride):
                in_index = k * w * h + (j // stride) * w + i // stride
                out_index = k * w * h * stride * stride + j * w * stride + i
                if forward:
                    out[out_index] = scale * src[in_index]
                else:
                    src[in_index] += scale * out[out_index]


def forward_upsample(x: np.ndarray, stride: int, scale: float) -> np.ndarray:
    """upsample_layer.c forward_upsample_layer for one image ``x (c, h, w)``: the output zeroed
    (fill_cpu), then upsample_cpu; a negative stride (``l.reverse``) reads it backward, from
    the output's point of view: each block of the input summed into one output cell."""
    c, h, w = x.shape
    if stride > 0:
        out = np.zeros(c * h * stride * w * stride)
        upsample_cpu(x.ravel(), w, h, c, stride, True, scale, out)
        return out.reshape(c, h * stride, w * stride)
    s = -stride
    out = np.zeros(c * (h // s) * (w // s))
    upsample_cpu(out, w // s, h // s, c, s, False, scale, x.ravel())
    return out.reshape(c, h // s, w // s)


def backward_upsample(delta: np.ndarray, in_shape: tuple, stride: int, scale: float):
    """backward_upsample_layer: the previous layer's delta for this layer's ``delta``. With a
    negative stride it is written (upsample_cpu forward=1: ``=``), not added to: what other
    layers reading the previous layer put there before is lost."""
    c, h, w = in_shape
    state = np.zeros(c * h * w)
    if stride > 0:
        upsample_cpu(state, w, h, c, stride, False, scale, delta.ravel())
    else:
        s = -stride
        upsample_cpu(delta.ravel(), w // s, h // s, c, s, True, scale, state)
    return state.reshape(c, h, w)


def _shortcut_weight(weights, n, src_i, step, layer_step, k, normalization):
    """shortcut_multilayer_cpu's weight of input ``k`` at element ``src_i``, normalised."""
    index = lambda j: src_i // step + j * layer_step  # noqa: E731
    w = weights[index(k)]
    if normalization == "none":
        return w
    ws = [weights[index(j)] for j in range(n + 1)]
    max_val = max(ws) if normalization == "softmax" else 0.0
    total = 0.0001 + sum(max(v, 0.0) if normalization == "relu" else np.exp(v - max_val)
                         for v in ws)  # fmt: skip
    return (max(w, 0.0) if normalization == "relu" else np.exp(w - max_val)) / total


def forward_shortcut(inputs: list[np.ndarray], weights: np.ndarray | None, normalization: str,
                     activation: str) -> np.ndarray:  # fmt: skip
    """shortcut_layer.c forward_shortcut_layer / blas.c shortcut_multilayer_cpu for one image:
    ``inputs[0]`` the previous layer ``(c, h, w)``, then the ``from`` layers (element ``src_i``
    of one added while ``src_i`` < its element count); ``weights`` flat (``n + 1`` per_feature
    or ``(n + 1) * c`` per_channel values), or None."""
    c, h, w = inputs[0].shape
    n, size = len(inputs) - 1, c * h * w
    layer_step = 1 if weights is None else len(weights) // (n + 1)
    step = size // layer_step
    flat = [x.ravel() for x in inputs]
    out = np.zeros(size)
    for src_i in range(size):
        for k in range(n + 1):
            if src_i >= len(flat[k]):  # `if (src_i < add_outputs)`
                continue
            wk = 1.0 if weights is None else _shortcut_weight(
                weights, n, src_i, step, layer_step, k, normalization
            )  # fmt: skip
            out[src_i] += flat[k][src_i] * wk
    return activate(out.reshape(c, h, w), activation)


def shortcut_weight_updates(inputs: list[np.ndarray], weights: np.ndarray, normalization: str,
                            delta: np.ndarray) -> np.ndarray:  # fmt: skip
    """backward_shortcut_multilayer_cpu's ``weight_updates`` for the delta after the activation
    (``delta``): ``delta * input`` summed per weight, the normalization's derivative left out
    (``grad = 1``)."""
    c, h, w = inputs[0].shape
    n, size = len(inputs) - 1, c * h * w
    layer_step = len(weights) // (n + 1)
    step = size // layer_step
    updates = np.zeros(len(weights))
    flat, d = [x.ravel() for x in inputs], delta.ravel()
    for src_i in range(size):
        for k in range(n + 1):
            updates[src_i // step + k * layer_step] += d[src_i] * flat[k][src_i]
    return updates


def forward_scale_channels(scales: np.ndarray, src: np.ndarray, scale_wh: bool,
                           activation: str) -> np.ndarray:  # fmt: skip
    """scale_channels_layer.c forward_scale_channels_layer for one image: ``src (c, h, w)``
    (the from layer) times ``scales`` (the previous layer: ``(c, 1, 1)``, or ``(1, h, w)`` with
    scale_wh), element ``i`` by ``input[i / channel_size]`` or ``input[i % channel_size]``."""
    c, h, w = src.shape
    channel_size, flat, s = h * w, src.ravel(), scales.ravel()
    out = np.zeros(c * h * w)
    for i in range(c * h * w):
        out[i] = (s[i % channel_size] if scale_wh else s[i // channel_size]) * flat[i]
    return activate(out.reshape(c, h, w), activation)


def reorg_cpu(x, out_w, out_h, out_c, batch, stride, forward, out) -> None:
    """blas.c reorg_cpu on flat arrays: ``forward`` writes ``out`` at the large layout's index
    from ``x`` at the small one's, else the other way."""
    in_c = out_c // (stride * stride)
    for b in range(batch):
        for k in range(out_c):
            for j in range(out_h):
                for i in range(out_w):
                    small = i + out_w * (j + out_h * (k + out_c * b))
                    c2, offset = k % in_c, k // in_c
                    w2, h2 = i * stride + offset % stride, j * stride + offset // stride
                    large = w2 + out_w * stride * (h2 + out_h * stride * (c2 + in_c * b))
                    if forward:
                        out[large] = x[small]
                    else:
                        out[small] = x[large]


def forward_reorg(x: np.ndarray, stride: int, reverse: bool, layer: str) -> np.ndarray:
    """reorg_old_layer.c (``layer="reorg"``) / reorg_layer.c (``"reorg3d"``) forward of one
    ``(C, H, W)`` map: reorg_cpu with ``forward = reverse`` on the input's sizes ([reorg]) or
    the output's ([reorg3d]); the output's shape from make_reorg_*_layer."""
    c, h, w = x.shape
    s = stride
    shape = (c // (s * s), h * s, w * s) if reverse else (c * s * s, h // s, w // s)
    sizes = (w, h, c) if layer == "reorg" else (shape[2], shape[1], shape[0])
    out = np.zeros(x.size)
    reorg_cpu(x.ravel(), *sizes, 1, s, int(reverse), out)
    return out.reshape(shape)
