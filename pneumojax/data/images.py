"""Reading untrusted image files into 8-bit grayscale, shared by the dataset builder and inference."""

import io
import os
import pathlib

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = ('.jpeg', '.jpg', '.png')
# Refuse images that would take gigabytes to decode (decompression bombs); X-rays are < 5,000 px a side.
Image.MAX_IMAGE_PIXELS = 8192 * 8192


class ImageReadError(ValueError):
  """An image file that cannot be decoded; the message names the file."""


def _to_grayscale_uint8(image: Image.Image) -> np.ndarray:
  """Any PIL mode -> uint8 [H, W]. 16-bit and float images are scaled by their range, not clipped; alpha is dropped."""
  if image.mode in ('I;16', 'I;16B', 'I;16L', 'I', 'F'):
    pixels = np.asarray(image, dtype=np.float64)
    if pixels.ndim == 3:
      pixels = pixels.mean(axis=-1)
    low, high = float(pixels.min()), float(pixels.max())
    scale = 255.0 / (high - low) if high > low else 0.0
    return np.round((pixels - low) * scale).astype(np.uint8)
  return np.asarray(image.convert('L'), dtype=np.uint8)


def _transparency_notes(image: Image.Image) -> list[str]:
  """A note if some pixels are not fully opaque: their alpha is ignored, so the same gray values give the same
  prediction however the file was saved (a radiograph has no meaningful transparency)."""
  if not image.has_transparency_data:
    return []
  alpha = np.asarray(image.convert('RGBA').getchannel('A'))
  transparent = int(np.count_nonzero(alpha < 255))
  if not transparent:
    return []
  return [f'{transparent:,} of {alpha.size:,} pixels are transparent or semi-transparent: alpha is ignored, '
          'the gray values are used.']


def _too_large(name: str, size: str) -> ImageReadError:
  return ImageReadError(f'{name}: too large ({size}; images over {Image.MAX_IMAGE_PIXELS:,} pixels are refused as '
                        'possible decompression bombs). Downscale it below the limit, or remove it from the folder.')


def decode_grayscale(data: bytes, name: str) -> tuple[np.ndarray, list[str]]:
  """Decodes JPEG/PNG bytes to uint8 [H, W], with notes for the user on what was done to them (ignored alpha).

  Raises ImageReadError naming `name` if they are not a whole image, or if its header declares more than
  `Image.MAX_IMAGE_PIXELS` pixels (checked before decoding).
  """
  if not data:
    raise ImageReadError(f'{name}: the file is empty (0 bytes). Re-download or remove it.')
  try:
    with Image.open(io.BytesIO(data)) as image:  # Reads only the header.
      width, height = image.size
      if width * height > Image.MAX_IMAGE_PIXELS:  # PIL itself only warns up to twice its limit.
        raise _too_large(name, f'{width}x{height} = {width * height:,} pixels')
      image.load()  # Decodes everything now: a truncated file fails here, not later in training.
      return _to_grayscale_uint8(image), _transparency_notes(image)
  except ImageReadError:
    raise
  except Image.DecompressionBombError as e:  # Raised by Image.open beyond twice the limit, before we see the size.
    raise _too_large(name, f'more than {2 * Image.MAX_IMAGE_PIXELS:,} pixels') from e
  except Exception as e:  # PIL raises many types (OSError, SyntaxError, ...).
    raise ImageReadError(
        f'{name}: not a readable JPEG/PNG image ({type(e).__name__}: {e}). '
        'Re-download the file, or remove it from the folder.') from e


def resize(image: np.ndarray, size: int, method: str) -> np.ndarray:
  """uint8 [H, W] -> uint8 [size, size].

  'squash' resizes the whole image to a square, as the papers did (aspect ratio lost); 'crop' first takes the
  centred square of the short edge, as MedMNIST did. Both use PIL's antialiased bilinear filter.
  """
  if method == 'crop':
    h, w = image.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    image = image[top:top + side, left:left + side]
  elif method != 'squash':
    raise ValueError(f"Unknown resize method {method!r}: use 'squash' or 'crop'.")
  return np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))


def read_image(path, data_config) -> tuple[np.ndarray, list[str]]:
  """uint8 [R, R] as the dataset builder stores an image, and notes for the user; ImageReadError if unreadable.

  The notes are those of `decode_grayscale` (ignored transparency) and of `stored_image` (a small image).
  """
  path = pathlib.Path(path)
  try:
    data = path.read_bytes()
  except OSError as e:
    link = f'a symbolic link to {os.readlink(path)}, which ' if path.is_symlink() else ''
    raise ImageReadError(f'{path}: {link}cannot be read ({e.strerror}).') from e
  pixels, notes = decode_grayscale(data, str(path))
  stored, size_notes = stored_image(pixels, data_config)
  return stored, notes + size_notes


def load_image(image, data_config) -> tuple[np.ndarray, list[str]]:
  """A path, a PIL image or a 2-D array -> (uint8 [R, R] as the dataset builder stores it, notes for the user):
  `read_image` for paths, `image_pixels` then `stored_image` for the others."""
  if isinstance(image, (str, os.PathLike)):
    return read_image(image, data_config)
  pixels, notes = image_pixels(image)
  stored, size_notes = stored_image(pixels, data_config)
  return stored, notes + size_notes


def image_pixels(image) -> tuple[np.ndarray, list[str]]:
  """A PIL image or a 2-D numpy array -> uint8 [H, W] as a file holding it would decode, and notes.

  uint8 arrays are taken as they are, uint16 ones scaled by their range (as 16-bit files are);
  float arrays must hold values in [0, 1] (multiplied by 255). Colour images are given as PIL images.
  """
  if isinstance(image, Image.Image):
    return _to_grayscale_uint8(image), _transparency_notes(image)
  pixels = np.asarray(image)
  if pixels.ndim != 2:
    raise ValueError(f'An image array must be 2-D [H, W] grayscale, not of shape {pixels.shape}: pass colour '
                     'images as PIL images (PIL.Image.fromarray).')
  if np.issubdtype(pixels.dtype, np.floating):
    if np.isnan(pixels).any():
      raise ValueError('A float image array must hold values in [0, 1]; this one holds NaN.')
    if pixels.min() < 0 or pixels.max() > 1:
      raise ValueError(f'A float image array must hold values in [0, 1]; this one spans [{pixels.min()}, '
                       f'{pixels.max()}]: divide 8-bit values by 255, or pass them as uint8.')
    return np.round(pixels * 255).astype(np.uint8), []
  if pixels.dtype not in (np.uint8, np.uint16):
    raise ValueError(f'An image array must be uint8, uint16 or float in [0, 1], not {pixels.dtype}.')
  return _to_grayscale_uint8(Image.fromarray(pixels)), []


def stored_image(pixels: np.ndarray, data_config) -> tuple[np.ndarray, list[str]]:
  """uint8 [H, W] -> uint8 [R, R] as the dataset builder stores it (R = `data.resolution`, `data.resize`), and a
  note if the image's short side is under R / 2: enlarged more than 2x, it holds far less detail than the model
  was trained on (a 200 px image for a 224 px model is fine; 16x16 is not), so its prediction deserves little
  trust."""
  size, notes = data_config.resolution, []
  if 2 * min(pixels.shape) < size:
    height, width = pixels.shape
    notes.append(f"only {width}x{height} pixels, enlarged {size / min(pixels.shape):.0f}x to the model's "
                 f'{size}x{size} input: far less detail than it was trained on.')
  return resize(pixels, size, data_config.resize), notes
