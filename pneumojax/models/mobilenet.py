"""MobileNetV2 (Sandler et al., 2018) at any width multiplier `alpha`, as keras.applications builds it.

Layers carry Keras's names (`Conv1`, `block_3_expand`, `Conv_1_bn`, ...) so that Keras weight files map by name.
'SAME' padding is TensorFlow's, which at stride 2 equals Keras's explicit `correct_pad`. BatchNorm epsilon 1e-3.
Expects inputs in [-1, 1]. Parameters with the 1000-class top: 3,538,984 (alpha 1.0); 410,208 without the top
at alpha 0.35.
"""

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from pneumojax.models import layers
from pneumojax.models.head import classify

# (expansion, output filters at alpha 1, stride) of the 17 inverted residual blocks.
BLOCKS = ((1, 16, 1),
          (6, 24, 2), (6, 24, 1),
          (6, 32, 2), (6, 32, 1), (6, 32, 1),
          (6, 64, 2), (6, 64, 1), (6, 64, 1), (6, 64, 1),
          (6, 96, 1), (6, 96, 1), (6, 96, 1),
          (6, 160, 2), (6, 160, 1), (6, 160, 1),
          (6, 320, 1))


def make_divisible(value: float, divisor: int = 8) -> int:
  """The nearest multiple of `divisor` (at least `divisor`), never more than 10% below `value`."""
  rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
  return rounded + divisor if rounded < 0.9 * value else rounded


class MobileNetV2(nn.Module):
  """`__call__(x, train)` maps [B, H, W, C] float32 to float32 logits (or features: see models.head)."""
  alpha: float = 1.0
  num_classes: int = 2
  hidden: Sequence[int] = ()
  dropout_rate: float = 0.0
  features_only: bool = False
  freeze_batch_norm: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    conv = functools.partial(layers.Conv, padding='SAME', use_bias=False, dtype=self.dtype, param_dtype=jnp.float32)
    norm = functools.partial(layers.BatchNorm, use_running_average=not train or self.freeze_batch_norm, momentum=0.9,
                             epsilon=1e-3, dtype=self.dtype, param_dtype=jnp.float32)

    def conv_bn(x, features, kernel, name, bn_name, strides=1, groups=1, relu=True):
      x = conv(features, (kernel, kernel), strides, feature_group_count=groups, name=name)(x)
      x = norm(name=bn_name)(x)
      return nn.relu6(x) if relu else x

    x = conv_bn(x, make_divisible(32 * self.alpha), 3, 'Conv1', 'bn_Conv1', strides=2)
    for block_id, (expansion, filters, stride) in enumerate(BLOCKS):
      prefix = f'block_{block_id}_' if block_id else 'expanded_conv_'
      y = x
      if block_id:
        y = conv_bn(y, expansion * x.shape[-1], 1, f'{prefix}expand', f'{prefix}expand_BN')
      y = conv_bn(y, y.shape[-1], 3, f'{prefix}depthwise', f'{prefix}depthwise_BN', strides=stride,
                  groups=y.shape[-1])
      out_filters = make_divisible(int(filters * self.alpha))
      y = conv_bn(y, out_filters, 1, f'{prefix}project', f'{prefix}project_BN', relu=False)
      x = x + y if stride == 1 and x.shape[-1] == out_filters else y
    last_filters = make_divisible(1280 * self.alpha) if self.alpha > 1.0 else 1280
    x = conv_bn(x, last_filters, 1, 'Conv_1', 'Conv_1_bn')
    return classify(self, jnp.mean(x, axis=(1, 2)), train)


mobilenet_v2 = MobileNetV2
