"""Classification tasks on the same images, chosen by `config.data.task`.

Every task is a function of an image's `subtype` (normal, bacteria, virus: the ids of `sources.SUBTYPES`):

- 'binary': normal vs pneumonia (bacterial or viral), the main task of Kermany et al.;
- 'three_class': normal vs bacterial vs viral pneumonia;
- 'bacteria_vs_virus': bacterial vs viral, on pneumonia images only (the second task of Kermany et al.).

The last class of a two-class task is the positive one (pneumonia, virus): its probability is the score that
ROC curves and thresholds use.
"""

import numpy as np
import tensorflow as tf

CLASS_NAMES = {
    'binary': ('normal', 'pneumonia'),
    'three_class': ('normal', 'bacteria', 'virus'),
    'bacteria_vs_virus': ('bacteria', 'virus'),
}
# Task label of each subtype (indexed as sources.SUBTYPES); -1: the image is not part of the task.
_LABEL_OF_SUBTYPE = {
    'binary': (0, 1, 1),
    'three_class': (0, 1, 2),
    'bacteria_vs_virus': (-1, 0, 1),
}


def class_names(data_config) -> tuple[str, ...]:
  if data_config.task not in CLASS_NAMES:
    raise ValueError(f'Unknown data.task {data_config.task!r}; use one of {", ".join(CLASS_NAMES)}.')
  return CLASS_NAMES[data_config.task]


def num_classes(data_config) -> int:
  """The number of classes of `data.task`: the model's number of outputs."""
  return len(class_names(data_config))


def _label_of_subtype(data_config) -> tuple[int, ...]:
  class_names(data_config)  # Raises on an unknown task.
  return _LABEL_OF_SUBTYPE[data_config.task]


def labels(subtypes: np.ndarray, data_config) -> np.ndarray:
  """Task labels of subtype ids (numpy); -1 marks images outside the task."""
  return np.asarray(_label_of_subtype(data_config))[subtypes]


def apply(ds: tf.data.Dataset, data_config) -> tf.data.Dataset:
  """Examples with `label` set to the task's label, the images outside the task left out (tf.data)."""
  table = tf.constant(_label_of_subtype(data_config), tf.int64)
  ds = ds.map(lambda ex: {**ex, 'label': tf.gather(table, ex['subtype'])})
  return ds.filter(lambda ex: ex['label'] >= 0)
