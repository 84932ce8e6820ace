"""Model registry: `get_model(name, **kwargs)` builds a Linen module by name.

Every model is called as `model.apply(variables, x, train=..., rngs={'dropout': key})` on float32 images
[B, H, W, C] (C = 1 or 3) and returns float32 logits [B, num_classes], whatever its compute `dtype`; parameters
are always float32.
"""

import flax.linen as nn
import jax.numpy as jnp

from pneumojax.models import resnet, simple_cnn

_MODELS = {
    'simple_cnn': simple_cnn.simple_cnn,
    'jain_model1': simple_cnn.jain_model1,
    'jain_model2': simple_cnn.jain_model2,
    'resnet18': resnet.resnet18,
    'resnet34': resnet.resnet34,
    'resnet50': resnet.resnet50,
}


def list_models() -> list[str]:
  return sorted(_MODELS)


def get_model(name: str, **kwargs) -> nn.Module:
  """`kwargs` are the module's fields (num_classes, dtype, ...); `dtype` may be a name such as 'bfloat16'."""
  if name not in _MODELS:
    raise ValueError(f'unknown model {name!r}; known models: {", ".join(list_models())}')
  if 'dtype' in kwargs:
    kwargs['dtype'] = jnp.dtype(kwargs['dtype'])
  return _MODELS[name](**kwargs)
