"""The Python API: a trained run in a notebook, and what the `eval`, `report`, `predict` and `explain` commands call.

  import pneumojax
  run = pneumojax.load_run('runs/quickstart')   # its config, model, best checkpoint and val-chosen threshold
  out = run.predict(['film.jpeg', pil_image, array])  # probabilities, labels, OOD scores and flags, warnings
  run.grad_cam(images), run.occlusion(image)    # [N, H, W] and [H, W] maps in [0, 1]
  run.metrics('test'), run.figures('test')      # the numbers of `pneumojax eval`; matplotlib Figures

Images are paths, PIL images or 2-D arrays (uint8, uint16, or float in [0, 1]), a list of these, or a 3-D array
[N, H, W]; each goes through exactly the preprocessing of `pneumojax predict` (trained/predict.py).
"""

import functools
import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # TensorFlow only feeds data here: keep its C++ logs quiet.

import numpy as np
from etils import epath
from matplotlib.figure import Figure

from pneumojax.data import pipeline, tasks
from pneumojax.evaluation import metrics as metrics_lib
from pneumojax.trained import evaluate, explain, load, predict, report
from pneumojax.trained.predict import Predictions


def load_run(workdir, step: int | None = None) -> 'TrainedRun':
  """The run trained in `workdir`, with its best-on-validation checkpoint or with checkpoint `step`."""
  return TrainedRun(load.load_run(workdir, step), chosen_on_validation=step is None)


class TrainedRun:
  """A trained run's checkpoint: predictions, explanations, metrics and figures."""

  def __init__(self, run: load.Run, chosen_on_validation: bool = True):
    self._run = run
    self._chosen_on_validation = chosen_on_validation
    self._evaluations = {}

  @property
  def workdir(self) -> epath.Path:
    return self._run.workdir

  @property
  def config(self):
    return self._run.config

  @property
  def step(self) -> int:
    """The checkpoint's step."""
    return self._run.step

  @property
  def class_names(self) -> tuple[str, ...]:
    return tasks.class_names(self.config.data)

  @property
  def threshold(self) -> float | None:
    """The operating threshold chosen on validation (threshold.json); None for more than two classes."""
    point = self._run.threshold()
    return None if point is None else point['threshold']

  @functools.cached_property
  def _predictor(self) -> predict.Predictor:
    return predict.Predictor(self._run)  # Fits the OOD detector on first use (trained/ood.py).

  @functools.cached_property
  def _explainer(self) -> explain.Explainer:
    return explain.Explainer(self._run.model, self._run.variables)

  def predict(self, images, batch_size: int = 64) -> Predictions:
    """Probabilities [N, k], labels, out-of-distribution scores and flags, and warnings for `images`."""
    return self._predictor.predict(images, batch_size)

  def _model_inputs(self, images) -> np.ndarray:
    pixels, _ = predict.read_images(images, self.config.data)
    return pipeline.eval_images(pixels[..., None], self.config.data).numpy()

  def _decided(self, inputs) -> np.ndarray:
    return metrics_lib.predicted_labels(self._explainer.probabilities(inputs), self.threshold)

  def grad_cam(self, images, classes=None) -> np.ndarray:
    """[N, H, W] Grad-CAM maps in [0, 1] at the model's input size, for `classes` [N] (default: the decided ones)."""
    inputs = self._model_inputs(images)
    return self._explainer.grad_cam(inputs, self._decided(inputs) if classes is None else classes)

  def occlusion(self, image, target: int | None = None) -> np.ndarray:
    """[H, W] occlusion map in [0, 1] of one image for class `target` (default: the decided one)."""
    inputs = self._model_inputs(image)
    return self._explainer.occlusion(inputs[0], int(self._decided(inputs)[0]) if target is None else target)

  def _evaluation(self, split: str, eval_overrides: dict) -> evaluate.Evaluation:
    key = (split, tuple(sorted(eval_overrides.items())))
    if key not in self._evaluations:
      self._evaluations[key] = evaluate.evaluate(self._run, split, self._chosen_on_validation, eval_overrides)
    return self._evaluations[key]

  def metrics(self, split: str = 'test', **eval_overrides) -> dict:
    """What `pneumojax eval` writes to metrics.json: metrics at each operating point with 95% patient-bootstrap
    intervals, the protocol, the threshold; `eval_overrides` update `config.eval` (e.g. threshold_rule='youden')."""
    return self._evaluation(split, eval_overrides).results

  def figures(self, split: str = 'test', **eval_overrides) -> dict[str, Figure]:
    """{name: matplotlib Figure}: roc, pr, confusion_matrix, calibration, training_curves, errors."""
    return evaluate.figures(self._run, self._evaluation(split, eval_overrides))

  def evaluate(self, split: str = 'test', **eval_overrides) -> dict:
    """`pneumojax eval`: `metrics`, also written with the figures to `workdir/eval/<split>/`."""
    evaluation = self._evaluation(split, eval_overrides)
    evaluate.write(self._run, evaluation)
    return evaluation.results

  def write_report(self, split: str = 'test') -> epath.Path:
    """`pneumojax report`: `workdir/report.html`."""
    return report.write_report(self._run, split, self._chosen_on_validation)

  def predict_files(self, inputs, out_csv, batch_size: int = 64) -> dict:
    """`pneumojax predict`: one CSV row per image file of `inputs` (files or folders); returns a summary."""
    files = predict.find_images(inputs)  # Bad arguments fail before the OOD detector is fitted.
    return predict.predict_files(self._predictor, files, out_csv, batch_size)

  def explain_files(self, files, out_dir=None) -> list:
    """`pneumojax explain`: a PNG of Grad-CAM and occlusion overlays per file, in `out_dir` (default
    `workdir/explain`)."""
    return explain.explain_files(self._run, self._explainer, files, out_dir)
