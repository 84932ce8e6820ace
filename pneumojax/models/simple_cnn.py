"""A small configurable CNN family: [conv -> (BatchNorm) -> relu] x n -> maxpool blocks, then a dense head.

Variants (registered in `pneumojax.models`):

- `simple_cnn`: the quickstart model. Four blocks of 16-32-64-128 3x3 filters with BatchNorm, global average
  pooling, dropout 0.5, one dense layer. About 115 MFLOPs per 128x128x1 image and 98k parameters, so it
  trains on a 2-core CPU.
- `jain_model1`, `jain_model2`: the two custom CNNs of Jain et al., "Pneumonia detection in chest X-ray images
  using convolutional neural networks and transfer learning", Measurement 165 (2020) 108046.
  KNOWN (the paper's abstract): Model 1 has two convolutional layers, Model 2 three.
  ASSUMED (we could not find the paper's layer tables), in the style of the Keras models of that time: 3x3
  'VALID' convolutions with 32-64 (Model 1) and 32-64-128 (Model 2) filters, each followed by relu, 2x2 max
  pooling and dropout 0.2; no BatchNorm; flatten; dense 128 + relu; dropout 0.5; the output layer. Their
  parameter count depends on the input size (the flatten layer). Replace the guesses once the tables are at
  hand.
"""

import functools
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from pneumojax.models.base import Classifier


class SimpleCNN(Classifier):
  """Conv blocks then a dense head; `__call__(x, train)` maps [B, H, W, C] float32 to float32 logits.

  Its head is its own (`Dense_0`, ... after the blocks' `Conv_0`, ...: no params['head']), with dropout before the
  output layer only; `features_only` returns the pooled features before it.
  """
  widths: Sequence[int] = (16, 32, 64, 128)  # filters of each block; each block ends in 2x2 max pooling.
  convs_per_block: int = 1
  padding: str = 'SAME'
  use_bn: bool = True
  block_dropout_rate: float = 0.0  # dropout after each block's pooling.
  pooling: str = 'avg'             # 'avg': global average pooling; 'flatten': keep the spatial layout.
  dropout_rate: float = 0.5        # dropout before the output layer.

  @nn.compact
  def __call__(self, x, train: bool):
    conv = self.conv(kernel_size=(3, 3), padding=self.padding, use_bias=not self.use_bn)
    norm = self.norm(train, epsilon=1e-5)
    for width in self.widths:
      for _ in range(self.convs_per_block):
        x = conv(width)(x)
        if self.use_bn:
          x = norm()(x)
        x = nn.relu(x)
      x = self.layers.max_pool(x, (2, 2), strides=(2, 2))
      if self.block_dropout_rate:
        x = self.dropout(self.block_dropout_rate, train)(x)
    if self.pooling == 'avg':
      x = jnp.mean(x, axis=(1, 2))
    elif self.pooling == 'flatten':
      x = x.reshape(x.shape[0], -1)
    else:
      raise ValueError(f"pooling must be 'avg' or 'flatten', got {self.pooling!r}")
    if self.features_only:
      return x.astype(jnp.float32)
    for width in self.hidden:
      x = nn.relu(nn.Dense(width, dtype=self.dtype, param_dtype=jnp.float32)(x))
    x = self.dropout(self.dropout_rate, train)(x)
    x = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=jnp.float32)(x)
    return x.astype(jnp.float32)


simple_cnn = SimpleCNN
jain_model1 = functools.partial(SimpleCNN, widths=(32, 64), padding='VALID', use_bn=False, block_dropout_rate=0.2,
                                pooling='flatten', hidden=(128,), dropout_rate=0.5)
jain_model2 = functools.partial(jain_model1, widths=(32, 64, 128))
