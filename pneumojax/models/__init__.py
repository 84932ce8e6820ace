"""Model registry: `get_model(name, **kwargs)` builds a Linen module by name.

Every model is a `base.Classifier`, called as `model.apply(variables, x, train=..., rngs={'dropout': key})` on
float32 images [B, H, W, C] (C = 1 or 3); it returns float32 logits [B, num_classes], whatever its compute
`dtype`; parameters are always float32. Every model takes `freeze_batch_norm=True`: BatchNorm then normalises
with its running statistics and leaves them unchanged, in training too (no effect on models without BatchNorm),
and `features_only=True`: it returns its pooled float32 features [B, D] instead, for linear probing and cached
features. Its conv, BatchNorm and max pooling are `layers` (models/layers.py), chosen here where it is built.

The pretrained-backbone families (vgg, resnet, inception_v3, densenet121, mobilenet_v2, efficientnet_lite0)
share a head (models/head.py): `num_classes`, `hidden` (widths of relu dense layers before the output),
`dropout_rate`; its parameters are under `params['head']`.

A new model: a family file whose module subclasses `base.Classifier`, and its name in `_MODELS` below.
"""

import flax.linen as nn
import jax.numpy as jnp

from pneumojax.models import densenet, efficientnet, inception, layers as layers_lib, mobilenet, resnet, simple_cnn
from pneumojax.models import vgg

_MODELS = {
    'simple_cnn': simple_cnn.simple_cnn,
    'jain_model1': simple_cnn.jain_model1,
    'jain_model2': simple_cnn.jain_model2,
    'resnet18': resnet.resnet18,
    'resnet34': resnet.resnet34,
    'resnet50': resnet.resnet50,
    'resnet101': resnet.resnet101,
    'vgg16': vgg.vgg16,
    'vgg19': vgg.vgg19,
    'inception_v3': inception.inception_v3,
    'densenet121': densenet.densenet121,
    'mobilenet_v2': mobilenet.mobilenet_v2,
    'efficientnet_lite0': efficientnet.efficientnet_lite0,
}


def list_models() -> list[str]:
  return sorted(_MODELS)


def get_model(name: str, layers: str = 'auto', **kwargs) -> nn.Module:
  """`kwargs` are the module's fields (num_classes, dtype, ...); `dtype` may be a name such as 'bfloat16'.

  `layers`: 'flax', 'xla_cpu' or 'auto' (xla_cpu when JAX's default backend is the CPU; models/layers.py).
  """
  if name not in _MODELS:
    raise ValueError(f'unknown model {name!r}; known models: {", ".join(list_models())}')
  if 'dtype' in kwargs:
    kwargs['dtype'] = jnp.dtype(kwargs['dtype'])
  # A config read back from JSON holds lists where it was given tuples; module fields must be hashable.
  kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
  return _MODELS[name](layers=layers_lib.choose(layers), **kwargs)
