"""The augmentation's geometry: hand-set crop boxes, rotations and flips move a marker pixel where they should, in
both implementations (augment.py for tf.data, augment_jax.py inside the jitted step), which agree with each other for
the same parameters and draw them from the same distributions."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
import tensorflow as tf

from pneumojax.config import default_config
from pneumojax.data import augment, augment_jax

pytestmark = pytest.mark.smoke
N = 8  # image side, in and out


def _tf_apply(images, params, size):
  params = {k: tf.constant(v, tf.bool if k == 'flip' else tf.float32) for k, v in params.items()}
  return augment.apply(tf.constant(images), params, size).numpy()


def _jax_apply(images, params, size):
  params = {k: jnp.asarray(v, bool if k == 'flip' else jnp.float32) for k, v in params.items()}
  return np.asarray(augment_jax.apply(jnp.asarray(images), params, size))


@pytest.fixture(params=[_tf_apply, _jax_apply], ids=['tf', 'jax'])
def _apply(request):
  def apply(marker, box=(0.0, 0.0, 1.0, 1.0), angle=0.0, flip=False):
    """An N x N black image with one white pixel at `marker` (row, col), augmented with the given box (top, left,
    height, width, as fractions of the image), angle (radians) and flip; no brightness or contrast change."""
    image = np.zeros((1, N, N, 1), np.float32)
    image[0, marker[0], marker[1], 0] = 1.0
    top, left, height, width = box
    params = {'box_top': [top], 'box_left': [left], 'box_height': [height], 'box_width': [width], 'angle': [angle],
              'flip': [flip], 'brightness': [0.0], 'contrast': [1.0]}
    return request.param(image, params, N)[0, ..., 0]
  return apply


def _marker_at(image, row, col):
  expected = np.zeros((N, N), np.float32)
  expected[row, col] = 1.0
  np.testing.assert_allclose(image, expected, atol=1e-5)


def test_the_whole_image_unrotated_is_unchanged(_apply):
  _marker_at(_apply((1, 5)), 1, 5)


def test_a_quarter_turn_moves_row_r_col_c_to_row_n_minus_1_minus_c_col_r(_apply):
  _marker_at(_apply((1, 5), angle=math.pi / 2), N - 1 - 5, 1)
  _marker_at(_apply((6, 2), angle=math.pi / 2), N - 1 - 2, 6)


def test_a_flip_mirrors_the_columns(_apply):
  _marker_at(_apply((1, 5), flip=True), 1, N - 1 - 5)


def test_the_top_left_quarter_box_is_magnified_twice(_apply):
  # Output pixel x samples input 0.5 x - 0.25 (pixel centres aligned): input column c lands on output columns 2c
  # and 2c + 1 with weight 0.75 each, and 0.25 on the columns beside them; the same for rows.
  image = _apply((1, 2), box=(0.0, 0.0, 0.5, 0.5))
  np.testing.assert_allclose(image[2:4, 4:6], 0.75 * 0.75, atol=1e-5)
  np.testing.assert_allclose(image[1:5, 3:7].sum(), 4.0, atol=1e-4)  # two times two: the area grew fourfold
  np.testing.assert_allclose(image.sum(), 4.0, atol=1e-4)
  assert _apply((6, 6), box=(0.0, 0.0, 0.5, 0.5)).max() < 1e-6  # outside the box: cropped away


@pytest.mark.parametrize('out_size', [64, 48])
def test_the_two_implementations_give_the_same_images_for_the_same_parameters(out_size):
  cfg = default_config().data
  cfg.hflip = True  # flips too
  images = np.random.default_rng(0).random((16, 64, 64, 1)).astype(np.float32)
  params = {k: v.numpy() for k, v in augment.draw_params(tf.constant([3, 7], tf.int64), 16, cfg).items()}
  np.testing.assert_allclose(_jax_apply(images, params, out_size), _tf_apply(images, params, out_size), atol=1e-4)


def test_the_two_implementations_draw_from_the_same_distributions():
  cfg = default_config().data
  cfg.hflip = True
  n = 20000
  drawn_tf = augment.draw_params(tf.constant([3, 7], tf.int64), n, cfg)
  drawn_jax = augment_jax.draw_params(jax.random.key(0), n, cfg)
  for name in drawn_tf:  # Kolmogorov-Smirnov distance of the two samples: 0.019 is the 0.1% critical value.
    distance = scipy.stats.ks_2samp(np.asarray(drawn_tf[name], float), np.asarray(drawn_jax[name], float)).statistic
    assert distance < 0.03, (name, distance)
