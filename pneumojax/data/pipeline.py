"""tf.data input pipelines that yield numpy batches ready for the train and eval steps.

Train: decode once -> cache -> shuffle (seeded, a new order each epoch) -> repeat -> global batch ->
this process's slice -> augment -> normalise -> prefetch. The stream depends only on (data, seed), so a run
resumed at step s gets exactly the batches s, s+1, ... an uninterrupted run would have seen.
Eval: decode -> cache -> pad to whole global batches (mask 0) -> this process's slice: every example exactly once.

Batches are dicts: `image` float32 [b, S, S, C], `label` int32 [b], `mask` float32 [b] (1 real, 0 padding).
"""

import dataclasses

import numpy as np
import tensorflow as tf

from pneumojax.data import augment, splits, tasks

# Per-channel (mean, std) applied to pixels in [0, 1].
NORMALIZATIONS = {
    'symmetric': ((0.5,), (0.5,)),     # [-1, 1]
    'unit': ((0.0,), (1.0,)),          # [0, 1]
    'imagenet': ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    # Keras VGG/ResNet50 ('caffe'): 0-255 BGR minus the ImageNet mean. Our channels are copies of one gray
    # image, so BGR order matters only for the means, given here in BGR order.
    'caffe': ((103.939 / 255, 116.779 / 255, 123.68 / 255), (1 / 255,) * 3),
}


@dataclasses.dataclass(frozen=True)
class SplitInfo:
  name: str
  num_examples: int
  class_counts: tuple[int, ...]


def split_info(builder, split: str, data_config) -> SplitInfo:
  labels = splits.split_metadata(builder, split, data_config)['label']
  if len(labels) == 0:
    raise ValueError(f'The {split!r} split of {builder.data_dir} is empty: check val_fraction and the data.')
  return SplitInfo(split, len(labels), tuple(np.bincount(labels, minlength=tasks.num_classes(data_config)).tolist()))


def input_shape(data_config) -> tuple[int, int, int]:
  """(S, S, C) of the model's input: `data.image_size` (0: the stored resolution) and `data.channels`."""
  size = data_config.image_size or data_config.resolution
  return size, size, data_config.channels


def _decoded(builder, split, data_config) -> tf.data.Dataset:
  ds = splits.load_split(builder, split, data_config)
  return ds.map(lambda ex: {'image': ex['image'], 'label': tf.cast(ex['label'], tf.int32)},
                num_parallel_calls=tf.data.AUTOTUNE)


def _normalise(images: tf.Tensor, data_config) -> tf.Tensor:
  """float [b, S, S, 1] in [0, 1] -> normalised [b, S, S, channels]; grayscale is repeated for RGB backbones."""
  if data_config.normalize not in NORMALIZATIONS:
    raise ValueError(f'Unknown normalize {data_config.normalize!r}; use one of {", ".join(NORMALIZATIONS)}.')
  if data_config.channels not in (1, 3):
    raise ValueError(f'channels must be 1 or 3, got {data_config.channels}.')
  images = tf.repeat(images, data_config.channels, axis=-1)
  mean, std = NORMALIZATIONS[data_config.normalize]
  return (images - tf.constant(mean)) / tf.constant(std)


def _process_slice(batch, process_index: int, process_count: int):
  """Contiguous slice of a global batch: the global array assembled from all processes is the global batch."""
  size = tf.shape(next(iter(batch.values())))[0] // process_count
  return {k: v[process_index * size:(process_index + 1) * size] for k, v in batch.items()}


def _check_batch(global_batch_size: int, process_count: int) -> None:
  if global_batch_size <= 0 or global_batch_size % process_count:
    raise ValueError(f'The global batch size {global_batch_size} must be a positive multiple of the process '
                     f'count {process_count}.')


def train_dataset(builder, data_config, global_batch_size: int, seed: int, start_step: int = 0,
                  process_index: int = 0, process_count: int = 1) -> tf.data.Dataset:
  """An endless stream of this process's train batches from `start_step` on."""
  _check_batch(global_batch_size, process_count)
  split = data_config.train_split
  info = split_info(builder, split, data_config)
  decoded = _decoded(builder, split, data_config)
  if data_config.class_balance == 'oversample':
    # Each class is its own cached, reshuffled stream, sampled with equal probability.
    per_class = [decoded.filter(lambda ex, c=c: ex['label'] == c).cache()
                 .shuffle(n, seed=seed + 1 + c, reshuffle_each_iteration=True).repeat()
                 for c, n in enumerate(info.class_counts) if n > 0]
    stream = tf.data.Dataset.sample_from_datasets(per_class, seed=seed, stop_on_empty_dataset=False)
  else:
    stream = decoded.cache().shuffle(info.num_examples, seed=seed, reshuffle_each_iteration=True).repeat()
  stream = stream.skip(start_step * global_batch_size).batch(global_batch_size, drop_remainder=True)
  stream = tf.data.Dataset.zip(tf.data.Dataset.counter(start_step), stream)
  size = input_shape(data_config)[0]

  def make_batch(step, batch):
    local = _process_slice(batch, process_index, process_count)
    images = tf.cast(local['image'], tf.float32) / 255.0
    if data_config.augment:
      params = augment.draw_params(tf.stack([tf.cast(seed, tf.int64), step]), global_batch_size, data_config)
      images = augment.apply(images, _process_slice(params, process_index, process_count), size)
    elif size != data_config.resolution:
      images = tf.image.resize(images, (size, size), antialias=True)
    return {'image': _normalise(images, data_config), 'label': local['label'],
            'mask': tf.ones_like(local['label'], tf.float32)}

  return stream.map(make_batch, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def eval_images(images, data_config) -> tf.Tensor:
  """uint8 [b, R, R, 1] at the stored resolution -> model input, exactly as evaluation and `predict` feed it."""
  images = tf.cast(images, tf.float32) / 255.0
  size = input_shape(data_config)[0]
  if size != data_config.resolution:
    images = tf.image.resize(images, (size, size), antialias=True)
  return _normalise(images, data_config)


def eval_dataset(builder, data_config, split: str, global_batch_size: int, process_index: int = 0,
                 process_count: int = 1) -> tuple[tf.data.Dataset, SplitInfo]:
  """One pass over `split` in its fixed order; the last batch is padded and masked, so nothing is dropped."""
  _check_batch(global_batch_size, process_count)
  info = split_info(builder, split, data_config)
  ds = _decoded(builder, split, data_config).cache().map(lambda ex: {**ex, 'mask': tf.constant(1.0)})
  num_padding = -info.num_examples % global_batch_size
  if num_padding:
    padding = tf.data.Dataset.from_tensors(
        {'image': tf.zeros([data_config.resolution] * 2 + [1], tf.uint8), 'label': tf.constant(0),
         'mask': tf.constant(0.0)})
    ds = ds.concatenate(padding.repeat(num_padding))

  def make_batch(batch):
    local = _process_slice(batch, process_index, process_count)
    return {**local, 'image': eval_images(local['image'], data_config)}

  ds = ds.batch(global_batch_size).map(make_batch, num_parallel_calls=tf.data.AUTOTUNE)
  return ds.prefetch(tf.data.AUTOTUNE), info
