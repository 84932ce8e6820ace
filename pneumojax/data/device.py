"""The device path of the data: a split's decoded uint8 images held as arrays, and each step's batch made from them
inside the jitted step.

When a split fits `data.device_memory_mb`, its images are put on the devices once (train/parallel.py). The global
batch of training step s is a pure function of (seed, s): an epoch's order is a permutation drawn from the seed and
the epoch (with `class_balance='oversample'`, each example's class is drawn uniformly, then an example of it), and
the augmentation parameters (data/augment_jax.py) are drawn for the whole global batch from the seed and the step;
each device gathers, augments and normalises its own slice. So a resumed run sees exactly the batches an
uninterrupted one would, on any number of devices and processes. The tf.data pipeline (data/pipeline.py) decodes
the split and remains the path of data that do not fit, or whose model input size differs from the stored one in
evaluation (its resize is TensorFlow's).
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import tensorflow_datasets as tfds
from jax import lax

from pneumojax.data import augment_jax, pipeline, splits

# Streams of the data key, so that the batch order and the augmentation draw independent numbers.
_ORDER, _AUGMENT = 0, 1


@dataclasses.dataclass(frozen=True)
class Split:
  """A split as host arrays in `load_split` order: `image` uint8 [N, R, R, 1], `label` int32 [N], `mask` float32 [N]
  (1 for real examples, 0 for the padding an evaluation split gets up to whole batches)."""
  name: str
  image: np.ndarray
  label: np.ndarray
  mask: np.ndarray

  def arrays(self) -> dict[str, np.ndarray]:
    return {'image': self.image, 'label': self.label, 'mask': self.mask}


def read_split(builder, split: str, data_config, pad_to: int = 1) -> Split:
  """The whole split decoded once, padded with masked zero images to a multiple of `pad_to` examples."""
  ds = splits.load_split(builder, split, data_config).map(lambda ex: (ex['image'], ex['label']))
  images, labels = [], []
  for image, label in tfds.as_numpy(ds.batch(1024)):
    images.append(image)
    labels.append(label.astype(np.int32))
  if not images:
    raise ValueError(f'The {split!r} split of {builder.data_dir} is empty: check val_fraction and the data.')
  image, label = np.concatenate(images), np.concatenate(labels)
  padding = -len(label) % pad_to
  mask = np.concatenate([np.ones(len(label), np.float32), np.zeros(padding, np.float32)])
  return Split(split, np.concatenate([image, np.zeros((padding, *image.shape[1:]), np.uint8)]),
               np.concatenate([label, np.zeros(padding, np.int32)]), mask)


def fits(data_config, num_examples: int) -> bool:
  """Whether a split of `num_examples` goes on the devices: its arrays within `data.device_memory_mb` (0: never)."""
  bytes_per_example = data_config.resolution**2 + 8  # uint8 pixels, int32 label, float32 mask
  return num_examples * bytes_per_example <= data_config.device_memory_mb * 2**20


def eval_on_devices(data_config) -> bool:
  """Evaluation splits can go on the devices when the model takes the stored resolution (no resize)."""
  return data_config.image_size in (0, data_config.resolution)


def normalise(images: jax.Array, data_config) -> jax.Array:
  """float [b, S, S, 1] in [0, 1] -> the model input [b, S, S, channels], as pipeline.py normalises."""
  mean, std = pipeline.NORMALIZATIONS[data_config.normalize]
  images = jnp.repeat(images, data_config.channels, axis=-1)
  return (images - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def eval_batch(arrays: dict[str, jax.Array], data_config) -> dict[str, jax.Array]:
  """uint8 examples -> the eval step's batch, exactly as `pipeline.eval_images` feeds it (no resize: see
  `eval_on_devices`)."""
  return {**arrays, 'image': normalise(arrays['image'].astype(jnp.float32) / 255.0, data_config)}


def batch_indices(key: jax.Array, step, labels: jax.Array, batch_size: int, class_balance: str,
                  class_counts) -> jax.Array:
  """The example indices [batch_size] of the global batch of 0-based `step`."""
  n = labels.shape[0]
  if class_balance == 'oversample':
    class_key, member_key = jax.random.split(jax.random.fold_in(key, step))
    present = jnp.asarray([c for c, count in enumerate(class_counts) if count > 0], jnp.int32)
    counts, starts = jnp.asarray(class_counts, jnp.int32), jnp.asarray(np.cumsum([0, *class_counts[:-1]]), jnp.int32)
    classes = jax.random.choice(class_key, present, (batch_size,))
    members = jnp.floor(jax.random.uniform(member_key, (batch_size,)) * counts[classes]).astype(jnp.int32)
    by_class = jnp.argsort(labels, stable=True)  # the indices of class 0's examples, then class 1's, ...
    return by_class[starts[classes] + members]
  epoch, position = jnp.divmod(step, n // batch_size)
  order = jax.random.permutation(jax.random.fold_in(key, epoch), n)
  return lax.dynamic_slice_in_dim(order, position * batch_size, batch_size)


def train_batch(arrays: dict[str, jax.Array], step, *, seed: int, batch_size: int, data_config, class_counts,
                axis_name: str) -> dict[str, jax.Array]:
  """This device's share of the global training batch of 0-based `step`, made from the split `arrays` (every device
  holds all of it): gathered, augmented and normalised, inside the jitted step."""
  key = jax.random.key(seed)
  indices = batch_indices(jax.random.fold_in(key, _ORDER), step, arrays['label'], batch_size,
                          data_config.class_balance, class_counts)
  rows = batch_size // lax.axis_size(axis_name)
  first = lax.axis_index(axis_name) * rows
  local = lax.dynamic_slice_in_dim(indices, first, rows)
  images = arrays['image'][local].astype(jnp.float32) / 255.0
  size = pipeline.input_shape(data_config)[0]
  if data_config.augment:
    params = augment_jax.draw_params(jax.random.fold_in(jax.random.fold_in(key, _AUGMENT), step), batch_size,
                                     data_config)
    images = augment_jax.apply(images, jax.tree.map(lambda p: lax.dynamic_slice_in_dim(p, first, rows), params),
                               size)
  elif size != images.shape[1]:
    images = jax.image.resize(images, (rows, size, size, images.shape[-1]), 'linear', antialias=True)
  return {'image': normalise(images, data_config), 'label': arrays['label'][local],
          'mask': jnp.ones((rows,), jnp.float32)}
