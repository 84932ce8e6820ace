"""`pneumojax predict`: a trained run's best checkpoint on image files -> one CSV row per file.

Each file goes through exactly the preprocessing of training and evaluation: decoded to 8-bit grayscale
(`images.read_image`: JPEG/PNG, 8/16-bit, gray/RGB/RGBA), resized as the dataset builder stored it (at
`data.resolution`, `data.resize`), then `pipeline.eval_images`. Two-class models label a
file with the threshold chosen on validation (`threshold.json`); more classes with the most probable class.
A file that cannot be read gets a row with its error and no prediction; the others are still predicted.

CSV columns (new ones are only ever added at the end):
  two classes:    path, probability_<second class> (pneumonia; virus for bacteria_vs_virus), label, error, warning
  three classes:  path, probability_pneumonia (1 - P(normal)), label, probability_<each class>, error, warning
`error` says why a file could not be predicted (its probabilities and label are then empty); `warning` what its
prediction should be read with: transparency that was ignored, or an image far smaller than the model's input
(see `images.read_image`), several joined by '; '.
"""

import csv
import logging
import os
import pathlib

import jax
import numpy as np
from tqdm import tqdm

from pneumojax.data import images as images_lib
from pneumojax.data import pipeline, tasks
from pneumojax.evaluation import metrics as metrics_lib
from pneumojax.train import step as step_lib
from pneumojax.trained import load

log = logging.getLogger(__name__)


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


def predict_files(workdir, inputs, out_csv, batch_size: int = 64) -> dict:
  """Writes one row per image file of `inputs` to `out_csv`; returns a summary of the run.

  The CSV is written under a temporary name and renamed once complete, so an `out_csv` that exists is whole.
  """
  files = find_images(inputs)
  run = load.load_run(workdir)
  config, state, step = run.config, run.state, run.step
  names = tasks.class_names(config.data)
  point = run.threshold()
  decision = ('the most probable class' if point is None else
              f'the threshold {point["threshold"]:.4f} ({point["rule"]}, on {point["chosen_on"]!r})')
  # The eval step itself, so that predictions are what evaluation computes.
  probabilities = jax.jit(lambda state, image: step_lib.eval_step(
      state, {'image': image, 'label': np.zeros(len(image), np.int32), 'mask': np.ones(len(image))})['probs'])
  out_csv = pathlib.Path(out_csv)
  partial = out_csv.parent / f'{out_csv.name}.partial'
  errors = warned = 0
  try:
    with partial.open('w', newline='') as f, tqdm(total=len(files), unit='image', desc='predict') as progress:
      writer = csv.DictWriter(f, fieldnames=_columns(names))
      writer.writeheader()
      for start in range(0, len(files), batch_size):
        batch = files[start:start + batch_size]
        pixels, failures, notes = _read(batch, config.data)
        if pixels:
          # Padded to a whole batch: one compilation for every batch.
          images = np.zeros((batch_size, *next(iter(pixels.values())).shape, 1), np.uint8)
          images[:len(pixels), ..., 0] = list(pixels.values())
          probs = dict(zip(pixels, np.asarray(probabilities(state, pipeline.eval_images(images, config.data).numpy()))))
        for path in batch:
          row = {'error': failures[path]} if path in failures else _prediction(probs[path], names, point)
          writer.writerow({'path': str(path), **row, 'warning': '; '.join(notes.get(path, []))})
        errors += len(failures)
        warned += sum(map(bool, notes.values()))
        progress.update(len(batch))
  except BaseException:
    partial.unlink(missing_ok=True)
    raise
  os.replace(partial, out_csv)
  (log.warning if errors or warned else log.info)(
      '%d files, %d of them unreadable (see their error column) and %d with a warning (see their warning column) '
      '-> %s; checkpoint step %d, labels by %s.', len(files), errors, warned, out_csv, step, decision)
  return {'files': len(files), 'errors': errors, 'warnings': warned, 'out': str(out_csv), 'checkpoint_step': step,
          'decision': decision}


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
    return ['path', f'probability_{names[1]}', 'label', 'error', 'warning']
  return ['path', 'probability_pneumonia', 'label', *(f'probability_{n}' for n in names), 'error', 'warning']


def _prediction(probs: np.ndarray, names, point) -> dict:
  threshold = None if point is None else point['threshold']
  label = names[metrics_lib.predicted_labels(probs[None], threshold)[0]]
  if len(names) == 2:
    return {f'probability_{names[1]}': float(probs[1]), 'label': label}
  return {'probability_pneumonia': float(1 - probs[names.index('normal')]), 'label': label,
          **{f'probability_{n}': float(p) for n, p in zip(names, probs)}}
