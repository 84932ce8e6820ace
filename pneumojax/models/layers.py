"""The layers a model is built with (`Layers`: conv, BatchNorm, max pooling), as flax's ImageNet example passes
`conv` and `norm` to its models: flax.linen's own (`FLAX`), or the same results in forms that XLA:CPU runs fast
(`XLA_CPU`). `choose('auto')`, called where a model is built (`models.get_model`), takes XLA_CPU on the CPU backend.

Max pooling and BatchNorm were the largest costs of a small CNN's train step on a 2-core CPU
(experiments/bench/README.md):

- `nn.max_pool`'s gradient is XLA's select-and-scatter, which XLA:CPU runs about 25x slower than elementwise
  code. Non-overlapping windows (the usual 2x2/2) are a maximum over reshaped axes whose gradient goes to each
  window's first maximum, exactly as flax's; overlapping ones the maximum of the window's strided slices, whose
  gradient is shared among tied inputs instead of going to the first (same forward values either way).
- `nn.BatchNorm`'s automatic gradient differentiates each reduction separately, and XLA:CPU recomputes the
  normalisation in several fusions; the closed-form backward pass below (scale and bias included) needs two
  reductions and one elementwise pass, about 2.5x faster on XLA:CPU.
- A depthwise `nn.Conv` (MobileNetV2, EfficientNet) is a grouped convolution, which XLA:CPU runs slowly;
  `Conv` computes it as the window's strided slices times per-channel weights.

Variables have flax's names and shapes (`params/{kernel,scale,bias}`, `batch_stats/{mean,var}`), so checkpoints
and the weight importers are the same with either. Other backends take flax's: on an H200, ResNet-50's train step
ran 8% slower with these (experiments/bench/README.md).
"""

import dataclasses
import functools
import itertools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax


def max_pool(x, window: Sequence[int], strides: Sequence[int] | None = None, padding='VALID'):
  """`nn.max_pool` over the two spatial axes of [B, H, W, C], as a maximum of reshaped axes or of slices."""
  strides = tuple(strides or window)
  pads = _pads(x.shape[1:3], window, strides, padding)
  if any(lo or hi for lo, hi in pads):
    x = jnp.pad(x, ((0, 0), *pads, (0, 0)), constant_values=-jnp.inf)
  if tuple(window) == strides:
    (kh, kw), (b, h, w, c) = window, x.shape
    x = x[:, :h - h % kh, :w - w % kw]
    return _max_over_windows(x.reshape(b, h // kh, kh, w // kw, kw, c))
  return functools.reduce(jnp.maximum, (xs for _, _, xs in _window_slices(x, window, strides)))


@jax.custom_vjp
def _max_over_windows(x):
  """The maximum over axes 2 and 4 of x [B, H', kh, W', kw, C]: non-overlapping windows."""
  return x.max(axis=(2, 4))


def _max_over_windows_fwd(x):
  y = x.max(axis=(2, 4))
  return y, (x, y)


def _max_over_windows_bwd(residuals, g):
  # Each window's first maximum (row-major) takes the whole gradient, as in flax; elementwise passes only.
  x, y = residuals
  taken = jnp.zeros(y.shape, bool)
  rows = []
  for i in range(x.shape[2]):
    row = []
    for j in range(x.shape[4]):
      first = (x[:, :, i, :, j] == y) & ~taken
      taken = taken | first
      row.append(jnp.where(first, g, jnp.zeros_like(g)))
    rows.append(jnp.stack(row, axis=-2))
  return (jnp.stack(rows, axis=2),)


_max_over_windows.defvjp(_max_over_windows_fwd, _max_over_windows_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _batch_norm_train(x, scale, bias, epsilon, axis_name):
  """((x - mean) * rsqrt(var + epsilon) * scale + bias, mean, var), the moments over all but the last axis (and
  over the devices of `axis_name`, if given: the statistics of the global batch)."""
  return _batch_norm_fwd(x, scale, bias, epsilon, axis_name)[0]


def _batch_norm_fwd(x, scale, bias, epsilon, axis_name):
  axes = tuple(range(x.ndim - 1))
  mean, mean_square = jnp.mean(x, axis=axes), jnp.mean(jnp.square(x), axis=axes)
  if axis_name is not None:
    mean, mean_square = lax.pmean((mean, mean_square), axis_name)
  var = jnp.maximum(mean_square - jnp.square(mean), 0.0)  # flax's fast variance.
  inv_std = lax.rsqrt(var + epsilon)
  y = (x - mean) * (inv_std * scale) + bias  # flax's formulation
  return (y, mean, var), (x, mean, inv_std, scale)


def _batch_norm_bwd(epsilon, axis_name, residuals, cotangents):
  del epsilon
  x, mean, inv_std, scale = residuals
  dy, d_mean, d_var = cotangents
  axes = tuple(range(x.ndim - 1))
  n = x.size // x.shape[-1]
  normalized = (x - mean) * inv_std  # recomputed: cheaper than keeping another activation-sized array
  d_bias = jnp.sum(dy, axis=axes)
  d_scale = jnp.sum(dy * normalized, axis=axes)
  # dx needs the sums over the global batch; scale and bias get this device's share (the step sums the shares).
  sum_bias, sum_scale = d_bias, d_scale
  if axis_name is not None:
    sum_bias, sum_scale, d_mean, d_var = lax.psum((d_bias, d_scale, d_mean, d_var), axis_name)
    n = n * lax.axis_size(axis_name)
  dx = (scale * inv_std) * (dy - sum_bias / n - normalized * (sum_scale / n))
  # The statistics' own cotangents: zero in training (they only feed batch_stats), kept for exactness.
  dx = dx + d_mean / n + d_var * 2.0 * (x - mean) / n
  return dx, d_scale, d_bias


_batch_norm_train.defvjp(_batch_norm_fwd, _batch_norm_bwd)


class BatchNorm(nn.Module):
  """`flax.linen.BatchNorm` over the last axis, with its variables, outputs and `axis_name` (statistics over the
  devices of that axis too: synchronised BatchNorm)."""
  use_running_average: bool = False
  axis_name: str | None = None
  momentum: float = 0.99
  epsilon: float = 1e-5
  use_bias: bool = True
  use_scale: bool = True
  dtype: Any = None  # output dtype; statistics are computed in float32.
  param_dtype: Any = jnp.float32
  scale_init: Callable = nn.initializers.ones_init()
  bias_init: Callable = nn.initializers.zeros_init()

  @nn.compact
  def __call__(self, x):
    features = x.shape[-1]
    ra_mean = self.variable('batch_stats', 'mean', lambda: jnp.zeros((features,), jnp.float32))
    ra_var = self.variable('batch_stats', 'var', lambda: jnp.ones((features,), jnp.float32))
    x32 = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    scale = (self.param('scale', self.scale_init, (features,), self.param_dtype) if self.use_scale
             else jnp.ones((features,), jnp.float32))
    bias = (self.param('bias', self.bias_init, (features,), self.param_dtype) if self.use_bias
            else jnp.zeros((features,), jnp.float32))
    if self.use_running_average:
      y = (x32 - ra_mean.value) * (lax.rsqrt(ra_var.value + self.epsilon) * scale) + bias
    else:
      # No collective while initialising: init runs outside the devices' mapped context.
      axis_name = None if self.is_initializing() else self.axis_name
      y, mean, var = _batch_norm_train(x32, scale, bias, self.epsilon, axis_name)
      if not self.is_initializing():
        ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * lax.stop_gradient(mean)
        ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * lax.stop_gradient(var)
    return y.astype(self.dtype or x.dtype)


class Dropout(nn.Module):
  """`flax.linen.Dropout` whose mask, with `axis_name`, is drawn for the global batch and sliced: every device
  draws the same mask from the same key and keeps its own rows, so the masks do not depend on how the batch is
  split over devices. The batch must be split evenly and in order over the axis (as parallel.py does)."""
  rate: float
  deterministic: bool = False
  axis_name: str | None = None

  @nn.compact
  def __call__(self, x):
    if self.deterministic or self.rate == 0:
      return x
    keep_rate = 1.0 - self.rate
    key = self.make_rng('dropout')
    if self.axis_name is None:
      keep = jax.random.bernoulli(key, keep_rate, x.shape)
    else:
      rows = x.shape[0]
      keep = jax.random.bernoulli(key, keep_rate, (rows * lax.axis_size(self.axis_name), *x.shape[1:]))
      keep = lax.dynamic_slice_in_dim(keep, lax.axis_index(self.axis_name) * rows, rows)
    return lax.select(keep, x / keep_rate, jnp.zeros_like(x))


def _pads(shape, window, strides, padding):
  if isinstance(padding, str):
    return tuple(lax.padtype_to_pads(shape, window, strides, padding))
  if isinstance(padding, int):
    return ((padding, padding),) * len(window)
  return tuple((p, p) if isinstance(p, int) else tuple(p) for p in padding)


def _window_slices(x, window, strides):
  """(i, j, the strided slice of x [B, H, W, C] that window offset (i, j) sees) for every offset."""
  out = [(x.shape[1 + d] - window[d]) // strides[d] + 1 for d in range(2)]
  for i, j in itertools.product(range(window[0]), range(window[1])):
    yield i, j, x[:, i:i + strides[0] * (out[0] - 1) + 1:strides[0], j:j + strides[1] * (out[1] - 1) + 1:strides[1]]


class Conv(nn.Conv):
  """`flax.linen.Conv`; a depthwise one (feature_group_count = input channels = features) runs as a sum of
  the window's strided slices times per-channel weights, which XLA:CPU computes and differentiates far faster
  than its grouped convolution (experiments/bench/README.md). The same parameters and outputs."""

  @nn.compact
  def __call__(self, inputs):
    channels = inputs.shape[-1]
    depthwise = self.feature_group_count == channels == self.features and channels > 1
    plain_padding = not isinstance(self.padding, str) or self.padding in ('SAME', 'VALID')
    if not (depthwise and plain_padding and inputs.ndim == 4
            and self.kernel_dilation in (None, 1, (1, 1))
            and self.input_dilation in (None, 1, (1, 1)) and not self.mask):
      return super().__call__(inputs)
    window = tuple(self.kernel_size)
    strides = (self.strides,) * 2 if isinstance(self.strides, int) else tuple(self.strides or (1, 1))
    kernel = self.param('kernel', self.kernel_init, (*window, 1, channels), self.param_dtype)
    bias = self.param('bias', self.bias_init, (channels,), self.param_dtype) if self.use_bias else None
    dtype = self.dtype or jnp.result_type(inputs, kernel)
    x, kernel = inputs.astype(dtype), kernel.astype(dtype)
    pads = _pads(x.shape[1:3], window, strides, self.padding)
    if any(lo or hi for lo, hi in pads):
      x = jnp.pad(x, ((0, 0), *pads, (0, 0)))
    y = functools.reduce(jnp.add, (xs * kernel[i, j, 0] for i, j, xs in _window_slices(x, window, strides)))
    return y if bias is None else y + bias.astype(dtype)


def _flax_max_pool(x, window: Sequence[int], strides: Sequence[int] | None = None, padding='VALID'):
  return nn.max_pool(x, tuple(window), tuple(strides or window), padding)


@dataclasses.dataclass(frozen=True)
class Layers:
  """What a model builds its layers with: `conv` and `batch_norm` are Linen module classes taking flax's arguments,
  `max_pool(x, window, strides=None, padding='VALID')` a function."""
  conv: Callable
  batch_norm: Callable
  max_pool: Callable


FLAX = Layers(nn.Conv, nn.BatchNorm, _flax_max_pool)
XLA_CPU = Layers(Conv, BatchNorm, max_pool)
CHOICES = ('auto', 'flax', 'xla_cpu')


def choose(name: str) -> Layers:
  """'flax', 'xla_cpu', or 'auto': XLA_CPU when JAX's default backend is the CPU, else FLAX."""
  if name not in CHOICES:
    raise ValueError(f'model.layers must be one of {CHOICES}, got {name!r}')
  if name == 'auto':
    name = 'xla_cpu' if jax.default_backend() == 'cpu' else 'flax'
  return XLA_CPU if name == 'xla_cpu' else FLAX
