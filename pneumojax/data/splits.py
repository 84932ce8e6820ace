"""Named splits: the official ones and a patient-disjoint validation split carved from the official train split.

The official val split has 16 images, too few to choose a checkpoint or a threshold, so by default models are
selected on `val_pd`: about 10% of the train *patients* (all their images), stratified by subtype; `train_pd` is
the rest of train. No patient is in both, so validation images never share a patient with training images.
"""

import functools

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from pneumojax.data import tasks

OFFICIAL = ('train', 'val', 'test')
PATIENT_DISJOINT = ('train_pd', 'val_pd')
ALL = OFFICIAL + PATIENT_DISJOINT


@functools.lru_cache(maxsize=16)
def read_metadata(builder, split: str) -> dict[str, np.ndarray]:
  """Every feature except the pixels (not decoded), as numpy arrays; strings as Python str."""
  ds = builder.as_dataset(split=split, decoders={'image': tfds.decode.SkipDecoding()})
  rows = list(tfds.as_numpy(ds.map(lambda ex: {k: v for k, v in ex.items() if k != 'image'})))
  columns = {k: np.array([r[k] for r in rows]) for k in (rows[0] if rows else {})}
  for k, v in columns.items():
    if v.dtype.kind in 'SO':
      columns[k] = np.array([s.decode() for s in v])
  return columns


def carve_validation_patients(patient_ids, strata, fraction: float, seed: int) -> list[str]:
  """Picks round(fraction * n) patients from each stratum, deterministically for a given seed."""
  if not 0 < fraction < 1:
    raise ValueError(f'val_fraction must be in (0, 1), got {fraction}.')
  patient_stratum = {}
  for patient, stratum in zip(patient_ids, strata):
    patient_stratum.setdefault(patient, stratum)  # A patient's first image decides (all share a class here).
  rng = np.random.default_rng(seed)
  chosen = []
  for stratum in sorted(set(patient_stratum.values())):
    members = sorted(p for p, s in patient_stratum.items() if s == stratum)
    count = int(round(fraction * len(members)))
    chosen.extend(rng.permutation(members)[:count].tolist())
  return sorted(chosen)


@functools.lru_cache(maxsize=16)
def validation_patients(builder, fraction: float, seed: int) -> list[str]:
  meta = read_metadata(builder, 'train')
  return tuple(carve_validation_patients(meta['patient_id'], meta['subtype'], fraction, seed))


def split_metadata(builder, split: str, data_config) -> dict[str, np.ndarray]:
  """The metadata of a named split, row i describing the i-th example that `load_split` yields.

  Only the images of `data_config.task` are listed, and `label` is the task's label (see data/tasks.py).
  """
  _check_split(builder, split)
  if split not in PATIENT_DISJOINT:
    return _task_rows(read_metadata(builder, split), data_config)
  meta = read_metadata(builder, 'train')
  in_val = np.isin(meta['patient_id'], validation_patients(builder, data_config.val_fraction, data_config.val_seed))
  keep = in_val if split == 'val_pd' else ~in_val
  return _task_rows({k: v[keep] for k, v in meta.items()}, data_config)


def _task_rows(meta: dict[str, np.ndarray], data_config) -> dict[str, np.ndarray]:
  """The rows of the images in `data_config.task`, `label` set to the task's label (as `tasks.apply`)."""
  if not meta:
    return meta
  labels = tasks.labels(meta['subtype'], data_config)
  keep = labels >= 0
  return {**{k: v[keep] for k, v in meta.items()}, 'label': labels[keep]}


def _check_split(builder, split: str) -> None:
  if split not in ALL:
    raise ValueError(f'Unknown split {split!r}; known splits: {", ".join(ALL)}.')
  base = 'train' if split in PATIENT_DISJOINT else split
  if base not in builder.info.splits:
    raise ValueError(f'The prepared dataset in {builder.data_dir} has no {base!r} split (the Mendeley '
                     f'ChestXRay2017 archive has none); use one of: {", ".join(builder.info.splits)}, '
                     f'{", ".join(PATIENT_DISJOINT)}.')


def load_split(builder, split: str, data_config, read_config=None) -> tf.data.Dataset:
  """The examples of a named split (ALL) in `data_config.task`, with the task's `label`, in a fixed order."""
  _check_split(builder, split)
  base = 'train' if split in PATIENT_DISJOINT else split
  ds = builder.as_dataset(split=base, shuffle_files=False, read_config=read_config)
  if split in PATIENT_DISJOINT:
    val = validation_patients(builder, data_config.val_fraction, data_config.val_seed)
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(list(val)), tf.ones(len(val), tf.bool)), default_value=False)
    keep_val = split == 'val_pd'
    ds = ds.filter(lambda ex: tf.equal(table.lookup(ex['patient_id']), keep_val))
  return tasks.apply(ds, data_config)
