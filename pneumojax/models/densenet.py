"""DenseNet-121 (Huang et al., 2017) as keras.applications builds it, with its layer names.

Dense blocks of (BN -> relu -> 1x1 conv to 4k -> BN -> relu -> 3x3 conv to k) layers whose outputs are
concatenated (growth rate k = 32); transitions halve the channels (BN -> relu -> 1x1 conv) and the resolution
(2x2 average pooling). BatchNorm epsilon 1.001e-5. Expects ImageNet mean/std-normalised inputs. 8,062,504
parameters with the 1000-class top.
"""

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from pneumojax.models.base import Classifier


class DenseNet(Classifier):
  """`__call__(x, train)` maps [B, H, W, C] float32 to float32 logits (or features: see models.base)."""
  blocks: Sequence[int] = (6, 12, 24, 16)
  growth_rate: int = 32

  @nn.compact
  def __call__(self, x, train: bool):
    conv = self.conv(use_bias=False)
    norm = self.norm(train, epsilon=1.001e-5)
    x = conv(64, (7, 7), strides=2, padding=3, name='conv1_conv')(x)
    x = nn.relu(norm(name='conv1_bn')(x))
    # -inf padding, where Keras pads with zeros: the same maximum after a relu.
    x = self.layers.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for i, num_layers in enumerate(self.blocks):
      for j in range(num_layers):
        name = f'conv{i + 2}_block{j + 1}'
        y = nn.relu(norm(name=f'{name}_0_bn')(x))
        y = conv(4 * self.growth_rate, (1, 1), name=f'{name}_1_conv')(y)
        y = nn.relu(norm(name=f'{name}_1_bn')(y))
        y = conv(self.growth_rate, (3, 3), padding=1, name=f'{name}_2_conv')(y)
        x = jnp.concatenate([x, y], axis=-1)
      if i < len(self.blocks) - 1:
        name = f'pool{i + 2}'
        x = nn.relu(norm(name=f'{name}_bn')(x))
        x = conv(x.shape[-1] // 2, (1, 1), name=f'{name}_conv')(x)
        x = nn.avg_pool(x, (2, 2), strides=(2, 2))
    x = nn.relu(norm(name='bn')(x))
    return self.classify(jnp.mean(x, axis=(1, 2)), train)


densenet121 = DenseNet
