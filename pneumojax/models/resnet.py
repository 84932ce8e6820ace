"""ResNet-18/34/50/101, after google/flax examples/imagenet/models.py, named as torchvision names its layers.

Two variants, so that both families of pretrained weights compute exactly their original function:
- 'torchvision' (default): v1.5, the stride in the 3x3 convolution; no convolution biases; BatchNorm epsilon 1e-5.
  3x3 convolutions and the stem max pooling pad symmetrically by one pixel, as torchvision does ('SAME' pads
  (0, 1) at stride 2). Parameter counts at 1000 classes and 3 channels equal torchvision's: 11,689,512
  (resnet18), 21,797,672 (resnet34), 25,557,032 (resnet50), 44,549,160 (resnet101).
- 'keras' (keras.applications ResNet50/101, bottleneck only): v1, the stride in the first 1x1 convolution;
  convolutions with biases; BatchNorm epsilon 1.001e-5. (Keras pads the max pooling with zeros instead of
  -inf: the same maximum after a relu.)

Module names follow torchvision's state_dict (`layer1_0/conv1` for `layer1.0.conv1`), so its weights map by name
(pneumojax.weights). BatchNorm statistics are per device; the train step averages the running statistics
across devices. `small_stem=True` replaces the 7x7/2 convolution and the max pooling by one 3x3/1
convolution, for small inputs (e.g. 28 px MedMNIST), keeping 4x more resolution through the network.
"""

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from pneumojax.models.base import Classifier

ModuleDef = Any
VARIANTS = ('torchvision', 'keras')


class BasicBlock(nn.Module):
  """Two 3x3 convolutions."""
  filters: int
  conv: ModuleDef
  norm: ModuleDef
  act: Callable
  strides: tuple[int, int] = (1, 1)

  @nn.compact
  def __call__(self, x):
    residual = x
    y = self.conv(self.filters, (3, 3), self.strides, padding=1, name='conv1')(x)
    y = self.act(self.norm(name='bn1')(y))
    y = self.conv(self.filters, (3, 3), padding=1, name='conv2')(y)
    # Zero-initialised last scale: each block starts as the identity (Goyal et al., 2017).
    y = self.norm(scale_init=nn.initializers.zeros_init(), name='bn2')(y)
    if residual.shape != y.shape:
      residual = self.conv(self.filters, (1, 1), self.strides, name='downsample_0')(residual)
      residual = self.norm(name='downsample_1')(residual)
    return self.act(residual + y)


class Bottleneck(nn.Module):
  """1x1 reduce, 3x3, 1x1 expand by 4; the stride in the 3x3 (v1.5) or in the first 1x1 (v1)."""
  filters: int
  conv: ModuleDef
  norm: ModuleDef
  act: Callable
  strides: tuple[int, int] = (1, 1)
  stride_in_1x1: bool = False

  @nn.compact
  def __call__(self, x):
    residual = x
    strides_1x1, strides_3x3 = (self.strides, (1, 1)) if self.stride_in_1x1 else ((1, 1), self.strides)
    y = self.conv(self.filters, (1, 1), strides_1x1, name='conv1')(x)
    y = self.act(self.norm(name='bn1')(y))
    y = self.conv(self.filters, (3, 3), strides_3x3, padding=1, name='conv2')(y)
    y = self.act(self.norm(name='bn2')(y))
    y = self.conv(self.filters * 4, (1, 1), name='conv3')(y)
    y = self.norm(scale_init=nn.initializers.zeros_init(), name='bn3')(y)
    if residual.shape != y.shape:
      residual = self.conv(self.filters * 4, (1, 1), self.strides, name='downsample_0')(residual)
      residual = self.norm(name='downsample_1')(residual)
    return self.act(residual + y)


class ResNet(Classifier):
  """`__call__(x, train)` maps [B, H, W, C] float32 to float32 logits (or features: see models.base)."""
  stage_sizes: Sequence[int] = (2, 2, 2, 2)  # blocks per stage: ResNet-18's
  block_cls: ModuleDef = BasicBlock
  num_filters: int = 64
  small_stem: bool = False
  variant: str = 'torchvision'
  act: Callable = nn.relu

  @nn.compact
  def __call__(self, x, train: bool):
    if self.variant not in VARIANTS:
      raise ValueError(f'ResNet variant must be one of {VARIANTS}, got {self.variant!r}')
    keras = self.variant == 'keras'
    block_cls = self.block_cls
    if keras:
      if block_cls is not Bottleneck:
        raise ValueError("variant='keras' exists only for the bottleneck ResNets (50, 101): Keras has no 18/34.")
      block_cls = functools.partial(Bottleneck, stride_in_1x1=True)
    conv = self.conv(use_bias=keras)
    norm = self.norm(train, epsilon=1.001e-5 if keras else 1e-5)
    if self.small_stem:
      x = conv(self.num_filters, (3, 3), padding=1, name='conv1')(x)
      x = self.act(norm(name='bn1')(x))
    else:
      x = conv(self.num_filters, (7, 7), (2, 2), padding=3, name='conv1')(x)
      x = self.act(norm(name='bn1')(x))
      x = self.layers.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for i, block_size in enumerate(self.stage_sizes):
      for j in range(block_size):
        strides = (2, 2) if i > 0 and j == 0 else (1, 1)
        x = block_cls(self.num_filters * 2**i, strides=strides, conv=conv, norm=norm, act=self.act,
                      name=f'layer{i + 1}_{j}')(x)
    return self.classify(jnp.mean(x, axis=(1, 2)), train)


resnet18 = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), block_cls=BasicBlock)
resnet34 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block_cls=BasicBlock)
resnet50 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block_cls=Bottleneck)
resnet101 = functools.partial(ResNet, stage_sizes=(3, 4, 23, 3), block_cls=Bottleneck)
