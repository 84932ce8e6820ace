"""`pneumojax predict` and the Python API's `predict`: a trained run's checkpoint on images -> probabilities, labels
and out-of-distribution scores; for files, one CSV row per file.

Each image goes through exactly the preprocessing of training and evaluation: decoded to 8-bit grayscale
(files by `images.read_image`: JPEG/PNG, 8/16-bit, gray/RGB/RGBA; PIL images and arrays by `images.image_pixels`),
resized as the dataset builder stored it (at `data.resolution`, `data.resize`), then `pipeline.eval_images`.
Two-class models label an image with the threshold chosen on validation (`threshold.json`); more classes with the
most probable class. Every image also gets an out-of-distribution score, the Mahalanobis distance of its
features to the training films', and a flag when it exceeds the threshold chosen on validation (trained/ood.py).
A file that cannot be read gets a row with its error and no prediction; the others are still predicted.

CSV columns (new ones are only ever added at the end):
  two classes:    path, probability_<second class> (pneumonia; virus for bacteria_vs_virus), label, error, warning,
                  ood_score, ood
  three classes:  path, probability_pneumonia (1 - P(normal)), label, probability_<each class>, error, warning,
                  ood_score, ood
`error` says why a file could not be predicted (its other columns are then empty); `warning` what its prediction
should be read with: transparency that was ignored, or an image far smaller than the model's input (see
`images.read_image`), several joined by '; '. `ood` is True for an image unlike the training films (a photograph,
a blank or noise image, often an adult film): its probability is not to be trusted, whatever its value.
"""

import csv
import dataclasses
import functools
import logging
import os
import pathlib

import jax
import numpy as np
from tqdm import tqdm

from pneumojax.data import images as images_lib
from pneumojax.data import pipeline, tasks
from pneumojax.evaluation import metrics as metrics_lib
from pneumojax.trained import ood

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Predictions:
  """A run's predictions for N images, in the order given."""
  class_names: tuple[str, ...]
  probabilities: np.ndarray  # [N, k]: the probability of each class, in `class_names` order.
  labels: list[str]          # the decided class: by the validation-chosen threshold (two classes), else the likeliest.
  ood_scores: np.ndarray     # [N]: Mahalanobis distance of the image's features to the training films' features.
  ood: np.ndarray            # [N] bool: ood_scores above the threshold chosen on validation.
  ood_threshold: float
  warnings: list[list[str]]  # [N]: what each prediction should be read with (ignored transparency, a small image).


class Predictor:
  """A run's checkpoint as a predictor: its decision rule, its out-of-distribution detector (fitted on first use,
  trained/ood.py) and one jitted forward pass giving both probabilities and features."""

  def __init__(self, run):
    self.run = run
    self.class_names = tasks.class_names(run.config.data)
    self.point = run.threshold()
    self._outputs = jax.jit(functools.partial(ood.outputs, run.model))
    self.detector = ood.detector(run, self._outputs)

  @property
  def decision(self) -> str:
    if self.point is None:
      return 'the most probable class'
    return f'the threshold {self.point["threshold"]:.4f} ({self.point["rule"]}, on {self.point["chosen_on"]!r})'

  def predict(self, images, batch_size: int = 64) -> Predictions:
    """Predictions for `images` (see `read_images`)."""
    return self.predict_stored(*read_images(images, self.run.config.data), batch_size)

  def predict_stored(self, pixels, warnings, batch_size: int = 64) -> Predictions:
    """Predictions for uint8 [N, R, R] images as the dataset stores them (`images.read_image`'s output), with
    each image's `warnings`."""
    probs, features = [], []
    for start in range(0, len(pixels), batch_size):
      chunk = pixels[start:start + batch_size]
      batch = np.zeros((batch_size, *pixels.shape[1:], 1), np.uint8)  # a whole batch: one compilation for all
      batch[:len(chunk), ..., 0] = chunk
      outputs = self._outputs(self.run.variables, pipeline.eval_images(batch, self.run.config.data).numpy())
      probs.append(np.asarray(outputs[0])[:len(chunk)])
      features.append(np.asarray(outputs[1])[:len(chunk)])
    probs = np.concatenate(probs)
    scores = self.detector.scores(np.concatenate(features))
    decided = metrics_lib.predicted_labels(probs, None if self.point is None else self.point['threshold'])
    return Predictions(self.class_names, probs, [self.class_names[c] for c in decided], scores,
                       scores > self.detector.threshold, self.detector.threshold, list(warnings))


def read_images(images, data_config) -> tuple[np.ndarray, list[list[str]]]:
  """`images` (a path, a PIL image or a 2-D array [H, W], a sequence of these, or a 3-D array [N, H, W]) ->
  (uint8 [N, R, R] as the dataset stores them, each image's notes); ImageReadError names a file that cannot be
  read."""
  if isinstance(images, np.ndarray) and images.ndim == 3:
    images = list(images)
  elif not isinstance(images, (list, tuple)):
    images = [images]
  if not images:
    raise ValueError('No images given.')
  read = [images_lib.load_image(image, data_config) for image in images]
  return np.stack([pixels for pixels, _ in read]), [notes for _, notes in read]


def find_images(inputs) -> list[pathlib.Path]:
  """Files named directly, and the .jpeg/.jpg/.png files in (and below) the folders named, in order.

  Symbolic links that lead nowhere (dangling, or a loop) are kept, so that they get a row with their error.
  """
  files = []
  for item in map(pathlib.Path, inputs):
    if item.is_dir():
      entries = [p for p in item.rglob('*') if p.is_file() or _is_broken_link(p)]
      found = sorted(p for p in entries if p.suffix.lower() in images_lib.IMAGE_SUFFIXES)
      if not found:
        raise FileNotFoundError(f'{item}: no {"/".join(images_lib.IMAGE_SUFFIXES)} files in this folder or below it.')
      if len(entries) > len(found):
        log.info('%s: %d files without an image suffix left out.', item, len(entries) - len(found))
      files += found
    elif item.is_file() or _is_broken_link(item):
      files.append(item)
    else:
      raise FileNotFoundError(f'{item}: no such file or folder.')
  return files


def _is_broken_link(path: pathlib.Path) -> bool:
  return path.is_symlink() and not path.exists()


def predict_files(predictor: Predictor, files, out_csv, batch_size: int = 64) -> dict:
  """Writes one row per image file of `files` (`find_images`) to `out_csv`; returns a summary of the run.

  The CSV is written under a temporary name and renamed once complete, so an `out_csv` that exists is whole.
  """
  out_csv = pathlib.Path(out_csv)
  partial = out_csv.parent / f'{out_csv.name}.partial'
  errors = warned = flagged = 0
  try:
    with partial.open('w', newline='') as f, tqdm(total=len(files), unit='image', desc='predict') as progress:
      writer = csv.DictWriter(f, fieldnames=_columns(predictor.class_names))
      writer.writeheader()
      for start in range(0, len(files), batch_size):
        batch = files[start:start + batch_size]
        pixels, failures, notes = _read(batch, predictor.run.config.data)
        if pixels:
          predictions = predictor.predict_stored(np.stack(list(pixels.values())), [notes[p] for p in pixels],
                                                 batch_size)
          rows = dict(zip(pixels, _rows(predictions)))
          flagged += int(predictions.ood.sum())
        for path in batch:
          row = {'error': failures[path]} if path in failures else rows[path]
          writer.writerow({'path': str(path), **row})
        errors += len(failures)
        warned += sum(map(bool, notes.values()))
        progress.update(len(batch))
  except BaseException:
    partial.unlink(missing_ok=True)
    raise
  os.replace(partial, out_csv)
  (log.warning if errors or warned or flagged else log.info)(
      '%d files, %d of them unreadable (see their error column), %d with a warning (see their warning column) and '
      '%d unlike the training films (ood column: do not trust their probabilities) -> %s; checkpoint step %d, '
      'labels by %s.', len(files), errors, warned, flagged, out_csv, predictor.run.step, predictor.decision)
  return {'files': len(files), 'errors': errors, 'warnings': warned, 'ood': flagged,
          'ood_threshold': predictor.detector.threshold, 'out': str(out_csv),
          'checkpoint_step': predictor.run.step, 'decision': predictor.decision}


def _read(paths, data_config) -> tuple[dict, dict, dict]:
  """({path: uint8 [R, R]} of the readable files, {path: error message} of the others, {path: notes})."""
  pixels, failures, notes = {}, {}, {}
  for path in paths:
    try:
      pixels[path], notes[path] = images_lib.read_image(path, data_config)
    except images_lib.ImageReadError as e:
      failures[path] = str(e)
  return pixels, failures, notes


def _columns(names) -> list[str]:
  if len(names) == 2:
    return ['path', f'probability_{names[1]}', 'label', 'error', 'warning', 'ood_score', 'ood']
  return ['path', 'probability_pneumonia', 'label', *(f'probability_{n}' for n in names), 'error', 'warning',
          'ood_score', 'ood']


def _rows(predictions: Predictions) -> list[dict]:
  """The CSV columns of each prediction, all but `path` and `error`."""
  names, rows = predictions.class_names, []
  for probs, label, score, flag, notes in zip(predictions.probabilities, predictions.labels, predictions.ood_scores,
                                              predictions.ood, predictions.warnings):
    if len(names) == 2:
      row = {f'probability_{names[1]}': float(probs[1]), 'label': label}
    else:
      row = {'probability_pneumonia': float(1 - probs[names.index('normal')]), 'label': label,
             **{f'probability_{n}': float(p) for n, p in zip(names, probs)}}
    rows.append({**row, 'warning': '; '.join(notes), 'ood_score': float(score), 'ood': bool(flag)})
  return rows
