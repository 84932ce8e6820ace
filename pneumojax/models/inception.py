"""Inception-v3 (Szegedy et al., 2016) as keras.applications builds it; native input 299 px, at least 75 px.

Every convolution is Keras's `conv2d_bn`: a bias-free convolution, BatchNorm without scale (epsilon 1e-3), relu.
Keras leaves these layers unnamed (`conv2d_N` in creation order), so the 94 `ConvBN_i` units here are created
in the same order as in keras/applications/inception_v3.py, and weights map by that order (pneumojax.weights).
Keep the order when editing. Expects inputs in [-1, 1]. 23,851,784 parameters with the 1000-class top.
"""

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from pneumojax.models.base import Classifier

ModuleDef = Any


class ConvBN(nn.Module):
  features: int
  kernel_size: tuple[int, int]
  conv: ModuleDef
  norm: ModuleDef
  strides: int = 1
  padding: str = 'SAME'

  @nn.compact
  def __call__(self, x):
    x = self.conv(self.features, self.kernel_size, self.strides, padding=self.padding, use_bias=False,
                  name='conv')(x)
    return nn.relu(self.norm(name='bn')(x))


def _avg_pool_3x3(x):
  # Keras's average pooling divides by the number of pixels inside the image, not counting the padding.
  return nn.avg_pool(x, (3, 3), padding='SAME', count_include_pad=False)


def _block_35(x, unit, pool_features):
  """mixed0-2: 35 x 35 at 299 px."""
  branch1x1 = unit(64, (1, 1))(x)
  branch5x5 = unit(48, (1, 1))(x)
  branch5x5 = unit(64, (5, 5))(branch5x5)
  branch3x3dbl = unit(64, (1, 1))(x)
  branch3x3dbl = unit(96, (3, 3))(branch3x3dbl)
  branch3x3dbl = unit(96, (3, 3))(branch3x3dbl)
  branch_pool = unit(pool_features, (1, 1))(_avg_pool_3x3(x))
  return jnp.concatenate([branch1x1, branch5x5, branch3x3dbl, branch_pool], axis=-1)


def _reduction_35_to_17(x, unit, max_pool_3x3):
  """mixed3."""
  branch3x3 = unit(384, (3, 3), strides=2, padding='VALID')(x)
  branch3x3dbl = unit(64, (1, 1))(x)
  branch3x3dbl = unit(96, (3, 3))(branch3x3dbl)
  branch3x3dbl = unit(96, (3, 3), strides=2, padding='VALID')(branch3x3dbl)
  return jnp.concatenate([branch3x3, branch3x3dbl, max_pool_3x3(x)], axis=-1)


def _block_17(x, unit, channels_7x7):
  """mixed4-7: 17 x 17, factorised 7x7 convolutions."""
  c = channels_7x7
  branch1x1 = unit(192, (1, 1))(x)
  branch7x7 = unit(c, (1, 1))(x)
  branch7x7 = unit(c, (1, 7))(branch7x7)
  branch7x7 = unit(192, (7, 1))(branch7x7)
  branch7x7dbl = unit(c, (1, 1))(x)
  branch7x7dbl = unit(c, (7, 1))(branch7x7dbl)
  branch7x7dbl = unit(c, (1, 7))(branch7x7dbl)
  branch7x7dbl = unit(c, (7, 1))(branch7x7dbl)
  branch7x7dbl = unit(192, (1, 7))(branch7x7dbl)
  branch_pool = unit(192, (1, 1))(_avg_pool_3x3(x))
  return jnp.concatenate([branch1x1, branch7x7, branch7x7dbl, branch_pool], axis=-1)


def _reduction_17_to_8(x, unit, max_pool_3x3):
  """mixed8."""
  branch3x3 = unit(192, (1, 1))(x)
  branch3x3 = unit(320, (3, 3), strides=2, padding='VALID')(branch3x3)
  branch7x7x3 = unit(192, (1, 1))(x)
  branch7x7x3 = unit(192, (1, 7))(branch7x7x3)
  branch7x7x3 = unit(192, (7, 1))(branch7x7x3)
  branch7x7x3 = unit(192, (3, 3), strides=2, padding='VALID')(branch7x7x3)
  return jnp.concatenate([branch3x3, branch7x7x3, max_pool_3x3(x)], axis=-1)


def _block_8(x, unit):
  """mixed9-10: 8 x 8, expanded filter banks."""
  branch1x1 = unit(320, (1, 1))(x)
  branch3x3 = unit(384, (1, 1))(x)
  branch3x3 = jnp.concatenate([unit(384, (1, 3))(branch3x3), unit(384, (3, 1))(branch3x3)], axis=-1)
  branch3x3dbl = unit(448, (1, 1))(x)
  branch3x3dbl = unit(384, (3, 3))(branch3x3dbl)
  branch3x3dbl = jnp.concatenate([unit(384, (1, 3))(branch3x3dbl), unit(384, (3, 1))(branch3x3dbl)], axis=-1)
  branch_pool = unit(192, (1, 1))(_avg_pool_3x3(x))
  return jnp.concatenate([branch1x1, branch3x3, branch3x3dbl, branch_pool], axis=-1)


class InceptionV3(Classifier):
  """`__call__(x, train)` maps [B, H, W, C] float32 to float32 logits (or features: see models.base)."""

  @nn.compact
  def __call__(self, x, train: bool):
    unit = functools.partial(ConvBN, conv=self.conv(), norm=self.norm(train, epsilon=1e-3, use_scale=False))
    max_pool_3x3 = functools.partial(self.layers.max_pool, window=(3, 3), strides=(2, 2))
    x = unit(32, (3, 3), strides=2, padding='VALID')(x)
    x = unit(32, (3, 3), padding='VALID')(x)
    x = unit(64, (3, 3))(x)
    x = max_pool_3x3(x)
    x = unit(80, (1, 1), padding='VALID')(x)
    x = unit(192, (3, 3), padding='VALID')(x)
    x = max_pool_3x3(x)
    for pool_features in (32, 64, 64):
      x = _block_35(x, unit, pool_features)
    x = _reduction_35_to_17(x, unit, max_pool_3x3)
    for channels_7x7 in (128, 160, 160, 192):
      x = _block_17(x, unit, channels_7x7)
    x = _reduction_17_to_8(x, unit, max_pool_3x3)
    for _ in range(2):
      x = _block_8(x, unit)
    return self.classify(jnp.mean(x, axis=(1, 2)), train)


inception_v3 = InceptionV3
