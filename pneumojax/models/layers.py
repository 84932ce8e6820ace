"""BatchNorm and max pooling with the same results as flax.linen's, and gradients that XLA:CPU computes fast.

Both were the largest costs of a small CNN's train step on a 2-core CPU (experiments/bench/README.md):

- `nn.max_pool`'s gradient is XLA's select-and-scatter, which XLA:CPU runs about 25x slower than the
  elementwise maximum of the window's strided slices used here (same forward values; where several inputs
  tie for the maximum, the gradient is shared among them instead of going to the first).
- `nn.BatchNorm`'s automatic gradient differentiates each reduction separately; the closed-form backward
  pass below needs two reductions and one elementwise pass, about 2.5x faster on XLA:CPU.

Variables have flax's names and shapes (`params/{scale,bias}`, `batch_stats/{mean,var}`), so checkpoints and
the weight importers are unchanged. Other backends keep flax's formulations: on an H200, ResNet-50's train step
ran 8% slower with these (experiments/bench/README.md).
"""

import functools
import itertools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax


def _xla_cpu() -> bool:
  return jax.default_backend() == 'cpu'


def max_pool(x, window: Sequence[int], strides: Sequence[int] | None = None, padding='VALID'):
  """`nn.max_pool` over the two spatial axes of [B, H, W, C]; on CPU as a maximum of strided slices."""
  strides = tuple(strides or window)
  if not _xla_cpu():
    return nn.max_pool(x, tuple(window), strides, padding)
  if isinstance(padding, str):
    pads = lax.padtype_to_pads(x.shape[1:3], window, strides, padding)
  else:
    pads = tuple(tuple(p) for p in padding)
  if any(lo or hi for lo, hi in pads):
    x = jnp.pad(x, ((0, 0), *pads, (0, 0)), constant_values=-jnp.inf)
  out = [(x.shape[1 + i] - window[i]) // strides[i] + 1 for i in range(2)]
  slices = (x[:, i:i + strides[0] * (out[0] - 1) + 1:strides[0], j:j + strides[1] * (out[1] - 1) + 1:strides[1]]
            for i, j in itertools.product(range(window[0]), range(window[1])))
  return functools.reduce(jnp.maximum, slices)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _batch_stats_and_standardize(x, epsilon):
  """(x - mean) / sqrt(var + epsilon) over all but the last axis of float32 x [N, C]; also mean and var."""
  return _standardize_fwd(x, epsilon)[0]


def _standardize_fwd(x, epsilon):
  mean = jnp.mean(x, axis=0)
  var = jnp.maximum(jnp.mean(jnp.square(x), axis=0) - jnp.square(mean), 0.0)  # flax's fast variance.
  inv_std = lax.rsqrt(var + epsilon)
  normalized = (x - mean) * inv_std
  return (normalized, mean, var), (normalized, inv_std, x, mean)


def _standardize_bwd(epsilon, residuals, cotangents):
  del epsilon
  normalized, inv_std, x, mean = residuals
  d_normalized, d_mean, d_var = cotangents
  n = x.shape[0]
  dx = inv_std * (d_normalized - jnp.mean(d_normalized, axis=0)
                  - normalized * jnp.mean(d_normalized * normalized, axis=0))
  # The statistics' own cotangents: zero in training (they only feed batch_stats), kept for exactness.
  dx = dx + d_mean / n + d_var * 2.0 * (x - mean) / n
  return (dx,)


_batch_stats_and_standardize.defvjp(_standardize_fwd, _standardize_bwd)


def _standardize_autodiff(x, epsilon):
  return _standardize_fwd(x, epsilon)[0]  # the same forward, differentiated by JAX (flax's formulation)


class BatchNorm(nn.Module):
  """`flax.linen.BatchNorm` over the last axis (no cross-device statistics): the same variables and outputs."""
  use_running_average: bool = False
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
    if self.use_running_average:
      y = (x32 - ra_mean.value) * lax.rsqrt(ra_var.value + self.epsilon)
    else:
      standardize = _batch_stats_and_standardize if _xla_cpu() else _standardize_autodiff
      y, mean, var = standardize(x32.reshape(-1, features), self.epsilon)
      y = y.reshape(x.shape)
      if not self.is_initializing():
        ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * lax.stop_gradient(mean)
        ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * lax.stop_gradient(var)
    if self.use_scale:
      y = y * self.param('scale', self.scale_init, (features,), self.param_dtype)
    if self.use_bias:
      y = y + self.param('bias', self.bias_init, (features,), self.param_dtype)
    return y.astype(self.dtype or x.dtype)
