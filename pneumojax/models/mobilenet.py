"""MobileNetV2 (Sandler et al., 2018) at any width multiplier `alpha`, as keras.applications builds it.

Layers carry Keras's names (`Conv1`, `block_3_expand`, `Conv_1_bn`, ...) so that Keras weight files map by name.
'SAME' padding is TensorFlow's, which at stride 2 equals Keras's explicit `correct_pad`. BatchNorm epsilon 1e-3.
Expects inputs in [-1, 1]. Parameters with the 1000-class top: 3,538,984 (alpha 1.0); 410,208 without the top
at alpha 0.35.
"""

import flax.linen as nn
import jax.numpy as jnp

from pneumojax.models.base import Classifier

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


class MobileNetV2(Classifier):
  """`__call__(x, train)` maps [B, H, W, C] float32 to float32 logits (or features: see models.base)."""
  alpha: float = 1.0

  @nn.compact
  def __call__(self, x, train: bool):
    conv = self.conv(padding='SAME', use_bias=False)
    norm = self.norm(train, epsilon=1e-3)

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
    return self.classify(jnp.mean(x, axis=(1, 2)), train)


mobilenet_v2 = MobileNetV2
