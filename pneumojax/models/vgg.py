"""VGG16 and VGG19 (Simonyan & Zisserman, 2015), with the layer names of keras.applications.

Five blocks of 3x3 'SAME' convolutions with relu (64, 128, 256, 512, 512 filters), each ending in 2x2 max
pooling; no BatchNorm. `pooling='avg'` (default) averages the last feature map, as a fine-tuned backbone
usually does; `pooling='flatten'` keeps it whole, as the ImageNet classifier does: with
`hidden=(4096, 4096)`, `num_classes=1000` and 224 px inputs this is Keras's VGG with its top (fc1, fc2,
predictions), 138,357,544 (VGG16) and 143,667,240 (VGG19) parameters.
"""

import functools
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from pneumojax.models.base import Classifier


class VGG(Classifier):
  """`__call__(x, train)` maps [B, H, W, C] float32 to float32 logits (or features: see models.base)."""
  stage_sizes: Sequence[int] = (2, 2, 3, 3, 3)  # convolutions per block: VGG16's
  pooling: str = 'avg'

  @nn.compact
  def __call__(self, x, train: bool):  # No BatchNorm: freeze_batch_norm has nothing to freeze.
    conv = self.conv(padding='SAME')
    for i, num_convs in enumerate(self.stage_sizes):
      for j in range(num_convs):
        x = nn.relu(conv(min(64 * 2**i, 512), (3, 3), name=f'block{i + 1}_conv{j + 1}')(x))
      x = self.layers.max_pool(x, (2, 2), strides=(2, 2))
    if self.pooling == 'avg':
      x = jnp.mean(x, axis=(1, 2))
    elif self.pooling == 'flatten':
      x = x.reshape(x.shape[0], -1)  # Row-major over (H, W, C), as Keras's Flatten.
    else:
      raise ValueError(f"pooling must be 'avg' or 'flatten', got {self.pooling!r}")
    return self.classify(x, train)


vgg16 = functools.partial(VGG, stage_sizes=(2, 2, 3, 3, 3))
vgg19 = functools.partial(VGG, stage_sizes=(2, 2, 4, 4, 4))
