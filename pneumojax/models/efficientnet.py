"""EfficientNet-Lite0 (Tan & Le, 2019; the "lite" variant for mobile accelerators), named as its PyTorch port.

Lite drops squeeze-and-excitation, uses relu6 instead of swish, and keeps the stem (32) and head (1280) widths
fixed. 'SAME' padding is TensorFlow's, as in the original and the port (efficientnet-lite-pytorch 0.1.0, whose
state_dict names `_blocks.3._expand_conv` map here to `blocks_3/expand_conv`). BatchNorm epsilon 1e-3. Dropout
0.2 before the classifier, as the original; no stochastic depth. Expects ImageNet mean/std-normalised RGB.
4,652,008 parameters with the 1000-class top.

`feature_blocks` makes the head see several depths: the spatially averaged outputs of those MBConv blocks (0-15)
and, as index 16, of the 1280-wide conv_head, concatenated. A frozen ImageNet backbone's last layer is tuned to
ImageNet's classes; its middle blocks hold more generic texture and shape features that a linear probe on chest
films can use (experiments/best/SEARCH.md). The default, (16,), is the usual single feature vector.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from pneumojax.models.base import Classifier

ModuleDef = Any

# (repeats, kernel size, stride of the first repeat, expansion, output filters) of the seven stages.
STAGES = ((1, 3, 1, 1, 16),
          (2, 3, 2, 6, 24),
          (2, 5, 2, 6, 40),
          (3, 3, 2, 6, 80),
          (3, 5, 1, 6, 112),
          (4, 5, 2, 6, 192),
          (1, 3, 1, 6, 320))


class MBConv(nn.Module):
  """Mobile inverted bottleneck: 1x1 expand (if expansion > 1), depthwise kxk, 1x1 project, residual if shapes allow."""
  expansion: int
  kernel_size: int
  strides: int
  out_filters: int
  conv: ModuleDef
  norm: ModuleDef

  @nn.compact
  def __call__(self, x):
    y = x
    if self.expansion != 1:
      y = nn.relu6(self.norm(name='bn0')(self.conv(x.shape[-1] * self.expansion, (1, 1), name='expand_conv')(y)))
    k = self.kernel_size
    y = self.conv(y.shape[-1], (k, k), self.strides, feature_group_count=y.shape[-1], name='depthwise_conv')(y)
    y = nn.relu6(self.norm(name='bn1')(y))
    y = self.norm(name='bn2')(self.conv(self.out_filters, (1, 1), name='project_conv')(y))
    return x + y if self.strides == 1 and x.shape[-1] == self.out_filters else y


class EfficientNetLite0(Classifier):
  """`__call__(x, train)` maps [B, H, W, C] float32 to float32 logits (or features: see models.base)."""
  dropout_rate: float = 0.2
  feature_blocks: Sequence[int] = (16,)  # the blocks whose pooled outputs the head sees (16: conv_head).

  @nn.compact
  def __call__(self, x, train: bool):
    conv = self.conv(padding='SAME', use_bias=False)
    norm = self.norm(train, epsilon=1e-3)
    x = nn.relu6(norm(name='bn0')(conv(32, (3, 3), 2, name='conv_stem')(x)))
    outputs = []  # of every block, then of conv_head
    for repeats, kernel_size, strides, expansion, out_filters in STAGES:
      for r in range(repeats):
        x = MBConv(expansion, kernel_size, strides if r == 0 else 1, out_filters, conv, norm,
                   name=f'blocks_{len(outputs)}')(x)
        outputs.append(x)
    outputs.append(nn.relu6(norm(name='bn1')(conv(1280, (1, 1), name='conv_head')(x))))
    if not self.feature_blocks or not set(self.feature_blocks) <= set(range(len(outputs))):
      raise ValueError(f'efficientnet_lite0 feature_blocks={tuple(self.feature_blocks)}: use indices 0-'
                       f'{len(outputs) - 2} (MBConv blocks) and {len(outputs) - 1} (conv_head).')
    pooled = [jnp.mean(outputs[i], axis=(1, 2)) for i in sorted(set(self.feature_blocks))]
    return self.classify(jnp.concatenate(pooled, axis=-1), train)


efficientnet_lite0 = EfficientNetLite0
