"""ResNet v1.5 (stride in the 3x3 convolution), after google/flax examples/imagenet/models.py.

Two deliberate differences from that example:
- 3x3 convolutions and the stem max pooling pad symmetrically by one pixel, as torchvision does ('SAME' pads
  (0, 1) at stride 2), so imported torchvision weights compute the same function. Parameter counts at 1000
  classes and 3 channels equal torchvision's: 11,689,512 (resnet18), 21,797,672 (resnet34), 25,557,032
  (resnet50).
- BatchNorm statistics are per device; the train step averages the running statistics across devices.

`small_stem=True` replaces the 7x7/2 convolution and the max pooling by one 3x3/1 convolution, for small
inputs (e.g. 28 px MedMNIST), keeping 4x more resolution through the network.
"""

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

ModuleDef = Any


class ResNetBlock(nn.Module):
  """Basic block: two 3x3 convolutions."""
  filters: int
  conv: ModuleDef
  norm: ModuleDef
  act: Callable
  strides: tuple[int, int] = (1, 1)

  @nn.compact
  def __call__(self, x):
    residual = x
    y = self.conv(self.filters, (3, 3), self.strides, padding=1)(x)
    y = self.act(self.norm()(y))
    y = self.conv(self.filters, (3, 3), padding=1)(y)
    # Zero-initialised last scale: each block starts as the identity (Goyal et al., 2017).
    y = self.norm(scale_init=nn.initializers.zeros_init())(y)
    if residual.shape != y.shape:
      residual = self.conv(self.filters, (1, 1), self.strides, name='conv_proj')(residual)
      residual = self.norm(name='norm_proj')(residual)
    return self.act(residual + y)


class BottleneckResNetBlock(nn.Module):
  """Bottleneck block: 1x1 reduce, 3x3 (strided), 1x1 expand by 4."""
  filters: int
  conv: ModuleDef
  norm: ModuleDef
  act: Callable
  strides: tuple[int, int] = (1, 1)

  @nn.compact
  def __call__(self, x):
    residual = x
    y = self.conv(self.filters, (1, 1))(x)
    y = self.act(self.norm()(y))
    y = self.conv(self.filters, (3, 3), self.strides, padding=1)(y)
    y = self.act(self.norm()(y))
    y = self.conv(self.filters * 4, (1, 1))(y)
    y = self.norm(scale_init=nn.initializers.zeros_init())(y)
    if residual.shape != y.shape:
      residual = self.conv(self.filters * 4, (1, 1), self.strides, name='conv_proj')(residual)
      residual = self.norm(name='norm_proj')(residual)
    return self.act(residual + y)


class ResNet(nn.Module):
  """`__call__(x, train)` maps [B, H, W, C] float32 to float32 logits [B, num_classes]."""
  stage_sizes: Sequence[int]
  block_cls: ModuleDef
  num_classes: int = 2
  num_filters: int = 64
  small_stem: bool = False
  dtype: Any = jnp.float32  # compute dtype; parameters stay float32.
  act: Callable = nn.relu

  @nn.compact
  def __call__(self, x, train: bool):
    conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype, param_dtype=jnp.float32)
    norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9, epsilon=1e-5,
                             dtype=self.dtype, param_dtype=jnp.float32)
    if self.small_stem:
      x = conv(self.num_filters, (3, 3), padding=1, name='conv_init')(x)
      x = self.act(norm(name='bn_init')(x))
    else:
      x = conv(self.num_filters, (7, 7), (2, 2), padding=3, name='conv_init')(x)
      x = self.act(norm(name='bn_init')(x))
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for i, block_size in enumerate(self.stage_sizes):
      for j in range(block_size):
        strides = (2, 2) if i > 0 and j == 0 else (1, 1)
        x = self.block_cls(self.num_filters * 2**i, strides=strides, conv=conv, norm=norm, act=self.act)(x)
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=jnp.float32)(x)
    return x.astype(jnp.float32)


resnet18 = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), block_cls=ResNetBlock)
resnet34 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block_cls=ResNetBlock)
resnet50 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block_cls=BottleneckResNetBlock)
