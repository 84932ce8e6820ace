"""Real pretrained weights for the model zoo: import, save as an Orbax checkpoint, start a run from it.

    model = models.get_model('mobilenet_v2', alpha=0.35, features_only=True)
    variables = weights.load('mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5', model)
    weights.save('pretrained/mobilenet_v2_035', variables)   # then --config.model.init_from=pretrained/...

or `python -m pneumojax.weights FILE --model NAME [--kwarg alpha=0.35] --out DIR`.

Layouts (by suffix): `.h5` Keras applications files for VGG16/19, ResNet50/101 (variant='keras'), InceptionV3,
DenseNet121, MobileNetV2 (weights/keras_h5.py); `.npz` or `.pth` PyTorch state_dicts for torchvision ResNets
and EfficientNet-Lite0 (weights/state_dict.py). A missing, unexpected or mis-shaped tensor is an error naming
it. A model with `features_only=True` takes the backbone and leaves a file's classifier out; a model with a
head needs the file's classifier, of the same number of classes.

Inputs the original weights expect: InceptionV3 and MobileNetV2 [-1, 1] (`data.normalize='symmetric'`);
DenseNet121, EfficientNet-Lite0 and torchvision ResNets the ImageNet mean/std on RGB in [0, 1]
(`data.normalize='imagenet'`); Keras VGG and ResNet50 Caffe's 0-255 BGR minus the ImageNet mean
(`data.normalize='caffe'`).
"""

from pathlib import Path

import jax
import jax.numpy as jnp

from pneumojax.weights import keras_h5, state_dict
from pneumojax.weights.pretrained import restore, save

_LOADERS = {'.h5': keras_h5.load, '.npz': state_dict.load, '.pth': state_dict.load}


def load(path, model, input_shape=(224, 224, 3)) -> dict:
  """`model`'s variables ({'params': ..., 'batch_stats': ...}, numpy float32) from a pretrained weight file.

  `input_shape` matters only where parameter shapes depend on it (VGG with pooling='flatten').
  """
  suffix = Path(path).suffix
  if suffix not in _LOADERS:
    raise ValueError(f'{path}: unknown weight file type {suffix!r}; known: {", ".join(_LOADERS)}')
  target = jax.eval_shape(lambda: model.init({'params': jax.random.key(0)}, jnp.zeros((1, *input_shape)),
                                             train=False))
  return _LOADERS[suffix](path, model, target)


__all__ = ['load', 'restore', 'save']
