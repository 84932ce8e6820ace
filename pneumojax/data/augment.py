"""Batched, stateless image augmentation: the same seed gives the same images on any number of processes.

Parameters are drawn for the whole global batch from a (seed, step) key and each process applies its slice, so a
run's augmentations do not depend on how it is split over processes, and a resumed run repeats them exactly.
Random resized crop, rotation and resize are one projective resample (one interpolation, not three).
"""

import math

import tensorflow as tf


def draw_params(key: tf.Tensor, batch_size: int, cfg) -> dict[str, tf.Tensor]:
  """Per-image random parameters for a global batch. `key` is an int64 [2] stateless seed."""
  keys = tf.random.experimental.stateless_split(key, 8)
  uniform = lambda i, lo, hi: tf.random.stateless_uniform([batch_size], keys[i], lo, hi)
  area = uniform(0, cfg.crop_scale_min, 1.0)
  log_ratio = uniform(1, -math.log(cfg.crop_max_aspect), math.log(cfg.crop_max_aspect))
  height = tf.minimum(tf.sqrt(area / tf.exp(log_ratio)), 1.0)  # Box sides as fractions of the image.
  width = tf.minimum(tf.sqrt(area * tf.exp(log_ratio)), 1.0)
  return {
      'box_height': height, 'box_width': width,
      'box_top': uniform(2, 0.0, 1.0) * (1.0 - height), 'box_left': uniform(3, 0.0, 1.0) * (1.0 - width),
      'angle': uniform(4, -1.0, 1.0) * (cfg.rotation_degrees * math.pi / 180.0),
      # Horizontal flips stay off by default: the heart lies on the left, so a flipped film is anatomically
      # implausible (dextrocardia) and its side markers read backwards.
      'flip': uniform(5, 0.0, 1.0) < (0.5 if cfg.hflip else 0.0),
      'brightness': uniform(6, -cfg.brightness, cfg.brightness),
      'contrast': uniform(7, 1.0 - cfg.contrast, 1.0 + cfg.contrast),
  }


def apply(images: tf.Tensor, params: dict[str, tf.Tensor], out_size: int) -> tf.Tensor:
  """float32 [b, H, W, C] in [0, 1] -> augmented float32 [b, out_size, out_size, C] in [0, 1]."""
  in_h, in_w = tf.cast(tf.shape(images)[1], tf.float32), tf.cast(tf.shape(images)[2], tf.float32)
  cos, sin = tf.cos(params['angle']), tf.sin(params['angle'])
  scale_x = params['box_width'] * in_w / out_size * tf.where(params['flip'], -1.0, 1.0)
  scale_y = params['box_height'] * in_h / out_size
  # Output pixel (x, y) -> rotate about the output centre -> scale into the crop box -> input pixel.
  centre = (out_size - 1) / 2.0
  box_cx = (params['box_left'] + params['box_width'] / 2) * in_w - 0.5
  box_cy = (params['box_top'] + params['box_height'] / 2) * in_h - 0.5
  zeros = tf.zeros_like(cos)
  transforms = tf.stack([
      scale_x * cos, -scale_x * sin, box_cx - scale_x * (cos - sin) * centre,
      scale_y * sin, scale_y * cos, box_cy - scale_y * (sin + cos) * centre,
      zeros, zeros], axis=1)
  images = tf.raw_ops.ImageProjectiveTransformV3(
      images=images, transforms=transforms, output_shape=[out_size, out_size], fill_value=0.0,
      interpolation='BILINEAR', fill_mode='NEAREST')
  mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
  contrast = params['contrast'][:, None, None, None]
  brightness = params['brightness'][:, None, None, None]
  return tf.clip_by_value((images - mean) * contrast + mean + brightness, 0.0, 1.0)
