"""Where a model looks: Grad-CAM and occlusion maps over its input image, and `pneumojax explain`.

- Grad-CAM (Selvaraju et al., ICCV 2017): the feature map A of the last layer with a spatial output, weighted
  per channel by the mean gradient of the target class's logit, summed, rectified and upsampled. The layer is
  found generically, for any Linen CNN: the last submodule call, in execution order, that returns
  [b, h, w, c] (the last BatchNorm of `simple_cnn`, the last block of a ResNet). `nn.intercept_methods` adds
  a zero tensor to that call's output, so the gradient with respect to that tensor is dScore/dA.
- Occlusion (Zeiler & Fergus, ECCV 2014; the maps of Kermany et al., 2018): the drop in the target class's
  probability when a square patch is covered by the image's mean, averaged over the patches covering a pixel.

Maps are in [0, 1] (each divided by its maximum); negative evidence is clipped to 0.
"""

import functools
import logging
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from pneumojax.data import images as images_lib
from pneumojax.data import pipeline, tasks
from pneumojax.evaluation import metrics, plots

log = logging.getLogger(__name__)


def feature_layer(model: nn.Module, variables, images) -> tuple[tuple[str, ...], jax.ShapeDtypeStruct]:
  """(module path, output shape) of the last submodule call that returns a spatial map [b, h, w, c]."""
  calls = []

  def record(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if context.method_name == '__call__' and context.module.path and getattr(out, 'ndim', 0) == 4:
      calls.append((context.module.path, jax.ShapeDtypeStruct(out.shape, out.dtype)))
    return out

  with nn.intercept_methods(record):
    jax.eval_shape(functools.partial(model.apply, train=False), variables, images)
  if not calls:
    raise ValueError(f'{type(model).__name__} has no layer with a spatial output: Grad-CAM needs a CNN.')
  return calls[-1]


def _normalise(maps: jax.Array) -> jax.Array:
  """Each map [b, H, W] rectified and divided by its maximum (an all-zero map stays zero)."""
  maps = jnp.maximum(maps, 0)
  peak = maps.max(axis=(1, 2), keepdims=True)
  return maps / jnp.where(peak > 0, peak, 1)


class Explainer:
  """Grad-CAM and occlusion maps of one model and its variables, for model inputs [b, H, W, C]."""

  def __init__(self, model: nn.Module, variables, occlusion_batch_size: int = 64):
    self._model, self._variables = model, variables
    self._occlusion_batch_size = occlusion_batch_size
    self._probabilities = jax.jit(lambda variables, images: jax.nn.softmax(self._logits(variables, images)))
    self._grad_cam = jax.jit(self._grad_cam_maps)

  def _logits(self, variables, images):
    return self._model.apply(variables, images, train=False)

  def probabilities(self, images) -> np.ndarray:
    return np.asarray(self._probabilities(self._variables, images))

  def grad_cam(self, images, targets) -> np.ndarray:
    """[b, H, W] Grad-CAM maps of `images` [b, H, W, C] for the classes `targets` [b]."""
    return np.asarray(self._grad_cam(self._variables, images, jnp.asarray(targets)))

  def _grad_cam_maps(self, variables, images, targets):
    layer, features_shape = feature_layer(self._model, variables, images)

    def target_logits(delta):
      features = []

      def add_delta(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name == '__call__' and context.module.path == layer:
          features.append(out)
          out = out + delta
        return out

      with nn.intercept_methods(add_delta):
        logits = self._logits(variables, images)
      return jnp.take_along_axis(logits, targets[:, None], axis=1).sum(), features[0]

    delta = jnp.zeros(features_shape.shape, features_shape.dtype)
    grads, features = jax.grad(target_logits, has_aux=True)(delta)
    weights = grads.astype(jnp.float32).mean(axis=(1, 2), keepdims=True)
    cam = (weights * features.astype(jnp.float32)).sum(axis=-1)
    return _normalise(jax.image.resize(cam, images.shape[:3], 'bilinear'))

  def occlusion(self, image, target: int, patch: int | None = None) -> np.ndarray:
    """[H, W] occlusion map of one `image` [H, W, C] for class `target`.

    Patches of `patch` px (default H // 8) slide with a stride of half a patch; the last row and column of
    patches touch the image's border, so every pixel is covered.
    """
    height, width = image.shape[:2]
    patch = patch or max(height // 8, 1)
    stride = max(patch // 2, 1)
    tops, lefts = (np.unique(np.r_[np.arange(0, size - patch + 1, stride), size - patch]) for size in (height, width))
    masks = np.zeros((len(tops) * len(lefts), height, width, 1), np.float32)
    for i, (top, left) in enumerate((t, l) for t in tops for l in lefts):
      masks[i, top:top + patch, left:left + patch] = 1
    occluded = image * (1 - masks) + image.mean() * masks
    size = self._occlusion_batch_size
    padded = np.concatenate([occluded, np.zeros((-len(masks) % size, *image.shape), np.float32)])
    probs = np.concatenate([self.probabilities(padded[i:i + size]) for i in range(0, len(padded), size)])
    drops = self.probabilities(image[None])[0, target] - probs[:len(masks), target]
    heat = np.tensordot(drops, masks[..., 0], axes=1) / masks[..., 0].sum(axis=0)
    return np.asarray(_normalise(heat[None]))[0]


def explain_files(run, explainer: Explainer, files, out_dir=None) -> list[pathlib.Path]:
  """Writes `<out_dir>/<file stem>.png` (default `workdir/explain`): the input, Grad-CAM and occlusion overlays of
  `run` (trained/load.py) by its `explainer`.

  The maps explain the class the model decides (at the validation-chosen threshold for two classes).
  """
  config, step = run.config, run.step
  names = tasks.class_names(config.data)
  point = run.threshold()
  out_dir = pathlib.Path(out_dir or pathlib.Path(run.workdir) / 'explain')
  out_dir.mkdir(parents=True, exist_ok=True)
  written = []
  for path in map(pathlib.Path, files):
    pixels, notes = images_lib.read_image(path, config.data)
    for note in notes:
      log.warning('%s: %s', path, note)
    image = pipeline.eval_images(pixels[None, ..., None], config.data).numpy()
    probs = explainer.probabilities(image)
    target = int(metrics.predicted_labels(probs, None if point is None else point['threshold'])[0])
    maps = {'Grad-CAM': explainer.grad_cam(image, [target])[0], 'Occlusion': explainer.occlusion(image[0], target)}
    title = (f'{path.name}: predicted {names[target]} (P = {probs[0, target]:.3f}); evidence for '
             f'{names[target]}\n({config.model.name}, checkpoint step {step})')
    written.append(plots.save(plots.explanation(image[0].mean(axis=-1), maps, title), out_dir / f'{path.stem}.png'))
    log.info('%s -> %s', path, written[-1])
  return written
