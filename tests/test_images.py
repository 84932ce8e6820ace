"""Decoding untrusted image files into 8-bit grayscale, and resizing them as the dataset stores them."""

import io

import hypothesis
import hypothesis.strategies as st
import numpy as np
import pytest
from PIL import Image

from pneumojax.data import images
from tests.helpers import blank_png

pytestmark = pytest.mark.smoke


def _png_bytes(array, mode=None):
  buffer = io.BytesIO()
  Image.fromarray(array, mode).save(buffer, format='PNG')
  return buffer.getvalue()


def test_16_bit_images_are_scaled_not_clipped():
  ramp = np.linspace(1000, 60000, 64 * 64).reshape(64, 64).astype(np.uint16)
  pixels, notes = images.decode_grayscale(_png_bytes(ramp), 'ramp.png')
  assert pixels.dtype == np.uint8 and pixels.min() == 0 and pixels.max() == 255 and notes == []
  assert np.all(np.diff(pixels.ravel().astype(int)) >= 0)


def test_transparency_is_ignored_and_noted():
  rgba = np.zeros((8, 8, 4), np.uint8)
  rgba[..., :3] = 200
  rgba[..., 3] = 255
  rgba[4:, :, 3] = 128  # bottom half semi-transparent, one pixel fully transparent
  rgba[7, 7, 3] = 0
  for mode in ('RGBA', 'LA'):
    pixels, notes = images.decode_grayscale(_png_bytes(np.asarray(Image.fromarray(rgba).convert(mode))), 'x.png')
    assert (pixels == 200).all(), mode  # the gray values, whatever the alpha
    assert len(notes) == 1 and '32 of 64 pixels' in notes[0] and 'alpha is ignored' in notes[0], mode
  rgba[..., 3] = 255
  assert images.decode_grayscale(_png_bytes(rgba), 'x.png')[1] == []  # opaque: nothing to say


@pytest.mark.parametrize('size', [(10_000, 10_000), (20_000, 10_000)])  # PIL itself only warns below 2x its limit
def test_images_over_the_pixel_limit_are_refused_before_decoding(size):
  limit = Image.MAX_IMAGE_PIXELS
  assert limit < size[0] * size[1]
  with pytest.raises(images.ImageReadError, match=f'big.png: too large .*{limit:,} pixels'):
    images.decode_grayscale(blank_png(size, '1'), 'big.png')


def test_crop_takes_the_centred_square():
  image = np.zeros((100, 200), np.uint8)
  image[:, 50:150] = 255
  np.testing.assert_array_equal(images.resize(image, 10, 'crop'), 255)
  assert images.resize(image, 10, 'squash').mean() < 200


def _encoded(fmt, mode, size=(24, 16)):
  buffer = io.BytesIO()
  pixels = np.random.default_rng(0).integers(0, 255, (*size[::-1], len(mode)), dtype=np.uint8)
  Image.fromarray(pixels.squeeze(-1) if mode == 'L' else pixels, mode).save(buffer, format=fmt)
  return buffer.getvalue()


VALID = [_encoded('JPEG', 'L'), _encoded('JPEG', 'RGB'), _encoded('PNG', 'L'), _encoded('PNG', 'RGBA')]


@hypothesis.settings(max_examples=300, deadline=None, database=None)
@hypothesis.given(st.one_of(
    st.binary(max_size=2048),
    st.tuples(st.sampled_from(VALID), st.integers(0, 4000), st.binary(min_size=1, max_size=64)).map(
        lambda t: t[0][:t[1] % len(t[0])] + t[2] + t[0][t[1] % len(t[0]) + len(t[2]):]),  # overwritten bytes
    st.tuples(st.sampled_from(VALID), st.integers(1, 4000)).map(lambda t: t[0][:t[1] % len(t[0])]),  # truncated
))
def test_image_reading_never_crashes(data):
  try:
    pixels, notes = images.decode_grayscale(data, 'fuzz.bin')
  except images.ImageReadError as e:
    assert 'fuzz.bin' in str(e)
  else:
    assert pixels.dtype == np.uint8 and pixels.ndim == 2 and all(isinstance(n, str) for n in notes)
