"""Training augmentation in JAX, inside the jitted step (data/device.py): augment.py's transform and distributions.

`draw_params` draws the per-image parameters of a whole global batch from a key that depends only on (seed, step),
with the distributions of `augment.draw_params`; `apply` resamples every image once (random resized crop, rotation
and optional flip as one bilinear projective resample, edge pixels repeated outside the image, as TensorFlow's
ImageProjectiveTransformV3 with fill_mode='NEAREST'), then applies contrast and brightness and clips to [0, 1]. For
the same parameters the images equal `augment.apply`'s (the tf.data path) up to float rounding (tests/test_augment.py).
"""

import math

import jax
import jax.numpy as jnp


def draw_params(key: jax.Array, batch_size: int, cfg) -> dict[str, jax.Array]:
  """Per-image random parameters for a global batch, distributed as `augment.draw_params`'s."""
  keys = jax.random.split(key, 8)
  uniform = lambda i, lo, hi: jax.random.uniform(keys[i], (batch_size,), jnp.float32, lo, hi)
  area = uniform(0, cfg.crop_scale_min, 1.0)
  log_ratio = uniform(1, -math.log(cfg.crop_max_aspect), math.log(cfg.crop_max_aspect))
  height = jnp.minimum(jnp.sqrt(area / jnp.exp(log_ratio)), 1.0)
  width = jnp.minimum(jnp.sqrt(area * jnp.exp(log_ratio)), 1.0)
  return {
      'box_height': height, 'box_width': width,
      'box_top': uniform(2, 0.0, 1.0) * (1.0 - height), 'box_left': uniform(3, 0.0, 1.0) * (1.0 - width),
      'angle': uniform(4, -1.0, 1.0) * (cfg.rotation_degrees * math.pi / 180.0),
      'flip': uniform(5, 0.0, 1.0) < (0.5 if cfg.hflip else 0.0),  # off by default: see augment.py.
      'brightness': uniform(6, -cfg.brightness, cfg.brightness),
      'contrast': uniform(7, 1.0 - cfg.contrast, 1.0 + cfg.contrast),
  }


def _bilinear(image: jax.Array, y: jax.Array, x: jax.Array) -> jax.Array:
  """image [H, W, C] sampled at float coordinates y, x [S, S] (clamped to the image: edge pixels repeat)."""
  height, width = image.shape[:2]
  y, x = jnp.clip(y, 0.0, height - 1.0), jnp.clip(x, 0.0, width - 1.0)
  y0, x0 = jnp.floor(y), jnp.floor(x)
  wy, wx = (y - y0)[..., None], (x - x0)[..., None]
  y0, x0 = y0.astype(jnp.int32), x0.astype(jnp.int32)
  y1, x1 = jnp.minimum(y0 + 1, height - 1), jnp.minimum(x0 + 1, width - 1)
  top = image[y0, x0] * (1 - wx) + image[y0, x1] * wx
  bottom = image[y1, x0] * (1 - wx) + image[y1, x1] * wx
  return top * (1 - wy) + bottom * wy


def _resample(image: jax.Array, p: dict, out_size: int) -> jax.Array:
  in_h, in_w = image.shape[:2]
  cos, sin = jnp.cos(p['angle']), jnp.sin(p['angle'])
  scale_x = p['box_width'] * in_w / out_size * jnp.where(p['flip'], -1.0, 1.0)
  scale_y = p['box_height'] * in_h / out_size
  # Output pixel (x, y) -> rotate about the output centre -> scale into the crop box -> input pixel.
  centre = (out_size - 1) / 2.0
  box_cx = (p['box_left'] + p['box_width'] / 2) * in_w - 0.5
  box_cy = (p['box_top'] + p['box_height'] / 2) * in_h - 0.5
  y, x = jnp.meshgrid(jnp.arange(out_size, dtype=jnp.float32), jnp.arange(out_size, dtype=jnp.float32),
                      indexing='ij')
  dx, dy = x - centre, y - centre
  in_x = box_cx + scale_x * (cos * dx - sin * dy)
  in_y = box_cy + scale_y * (sin * dx + cos * dy)
  return _bilinear(image, in_y, in_x)


def apply(images: jax.Array, params: dict[str, jax.Array], out_size: int) -> jax.Array:
  """float32 [b, H, W, C] in [0, 1] -> augmented float32 [b, out_size, out_size, C] in [0, 1]."""
  images = jax.vmap(lambda image, p: _resample(image, p, out_size))(images, params)
  mean = jnp.mean(images, axis=(1, 2, 3), keepdims=True)
  contrast = params['contrast'][:, None, None, None]
  brightness = params['brightness'][:, None, None, None]
  return jnp.clip((images - mean) * contrast + mean + brightness, 0.0, 1.0)
