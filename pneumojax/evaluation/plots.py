"""Figures of an evaluation and of a run, drawn with scikit-learn's displays where they exist.

Each function returns a `matplotlib.figure.Figure` (no pyplot state), which `save` writes as PNG, so nothing
needs a display and nothing changes the caller's matplotlib backend; a notebook shows the Figure itself. Two-class tasks plot the score of their positive class
(the last one); more classes are plotted one-vs-rest.
"""

import math

import numpy as np
from etils import epath
from matplotlib.figure import Figure
from sklearn.calibration import CalibrationDisplay
from sklearn.metrics import ConfusionMatrixDisplay, PrecisionRecallDisplay, RocCurveDisplay

from pneumojax.evaluation import metrics

_MARKERS = 'o^sD'


def save(fig: Figure, path) -> epath.Path:
  """Writes `fig` as a PNG to `path`."""
  path = epath.Path(path)
  fig.savefig(path, dpi=110)
  return path


def _legend_below(ax) -> None:
  """Below the axes: curves fill every corner of ROC and PR plots."""
  ax.legend(loc='upper center', bbox_to_anchor=(0.5, -0.12), fontsize='small')


def _one_vs_rest(labels, probs, class_names):
  """(name, binary labels, scores) per curve: the positive class of a two-class task, else every class."""
  classes = [len(class_names) - 1] if len(class_names) == 2 else range(len(class_names))
  for c in classes:
    rest = class_names[0] if len(class_names) == 2 else 'rest'
    yield f'{class_names[c]} vs {rest}', np.asarray(labels) == c, np.asarray(probs)[:, c]


def roc_curve(labels, probs, class_names, thresholds: dict[str, float]) -> Figure:
  """ROC curve(s) with AUC; two-class tasks mark the operating point of each named threshold."""
  fig = Figure(figsize=(6, 5.5), layout='constrained')
  ax = fig.subplots()
  for name, positive, scores in _one_vs_rest(labels, probs, class_names):
    RocCurveDisplay.from_predictions(positive, scores, name=name, ax=ax)
  if len(class_names) == 2:
    for (name, t), marker in zip(thresholds.items(), _MARKERS):
      point = metrics.binary_metrics(labels, probs[:, 1], t)
      ax.plot(1 - point['specificity'], point['sensitivity'], marker, markersize=9,
              label=f'{name} ({t:.3f}): sensitivity {point["sensitivity"]:.2f}, '
                    f'specificity {point["specificity"]:.2f}')
  ax.plot([0, 1], [0, 1], ':', color='gray', label='chance')
  ax.set(title='ROC curve', xlabel='False positive rate (1 - specificity)', ylabel='True positive rate (sensitivity)')
  _legend_below(ax)
  return fig


def pr_curve(labels, probs, class_names, thresholds: dict[str, float]) -> Figure:
  """Precision-recall curve(s) with average precision; two-class tasks mark their operating points."""
  fig = Figure(figsize=(6, 5.5), layout='constrained')
  ax = fig.subplots()
  for name, positive, scores in _one_vs_rest(labels, probs, class_names):
    PrecisionRecallDisplay.from_predictions(positive, scores, name=name, ax=ax)
    ax.axhline(positive.mean(), linestyle=':', color='gray', label=f'chance ({name}): {positive.mean():.2f}')
  if len(class_names) == 2:
    for (name, t), marker in zip(thresholds.items(), _MARKERS):
      point = metrics.binary_metrics(labels, probs[:, 1], t)
      ax.plot(point['sensitivity'], point['precision'], marker, markersize=9,
              label=f'{name} ({t:.3f}): recall {point["sensitivity"]:.2f}, precision {point["precision"]:.2f}')
  ax.set(title='Precision-recall curve', xlabel='Recall (sensitivity)', ylabel='Precision (positive predictive value)',
         ylim=(0, 1.02))
  _legend_below(ax)
  return fig


def confusion_matrices(matrices: dict[str, list], class_names) -> Figure:
  """One confusion matrix (rows: true class, columns: predicted) per named operating point."""
  fig = Figure(figsize=(4.6 * len(matrices), 4.4), layout='constrained')
  for ax, (name, matrix) in zip(np.atleast_1d(fig.subplots(1, len(matrices))), matrices.items()):
    ConfusionMatrixDisplay(np.asarray(matrix), display_labels=class_names).plot(
        ax=ax, cmap='Blues', colorbar=False, values_format='d')
    ax.set(title=name, xlabel='Predicted class', ylabel='True class')
  return fig


def calibration(labels, probs, class_names, num_bins: int = 10) -> Figure:
  """Reliability diagram: mean predicted probability against the observed frequency, per quantile bin."""
  fig = Figure(figsize=(6, 5.5), layout='constrained')
  ax = fig.subplots()
  for name, positive, scores in _one_vs_rest(labels, probs, class_names):
    CalibrationDisplay.from_predictions(positive, scores, n_bins=num_bins, strategy='quantile', name=name, ax=ax)
  ax.set(title=f'Calibration ({num_bins} bins of equal count)', xlabel='Mean predicted probability',
         ylabel='Observed fraction of positives')
  ax.legend(loc='upper left', fontsize='small')
  return fig


def training_curves(history: dict[str, tuple[np.ndarray, np.ndarray]], steps_per_epoch: int) -> Figure:
  """Loss, accuracy and ROC-AUC per epoch from `history` {'train/loss': (steps, values), 'val/auc': ...}."""
  panels = [(m, label) for m, label in (('loss', 'Cross-entropy loss'), ('accuracy', 'Accuracy'),
                                        ('auc', 'ROC-AUC')) if any(t.endswith('/' + m) for t in history)]
  fig = Figure(figsize=(4.6 * len(panels), 4), layout='constrained')
  for ax, (metric, label) in zip(np.atleast_1d(fig.subplots(1, len(panels))), panels):
    for role, style in (('train', '-'), ('val', 'o-')):
      if f'{role}/{metric}' in history:
        steps, values = history[f'{role}/{metric}']
        ax.plot(np.asarray(steps) / steps_per_epoch, values, style, label='validation' if role == 'val' else role)
    ax.set(title=label, xlabel='Epoch', ylabel=label)
    ax.legend()
  return fig


def image_grid(images, titles, suptitle: str, columns: int = 4) -> Figure:
  """uint8 [H, W] grayscale images with a title each."""
  rows = math.ceil(len(images) / columns)
  fig = Figure(figsize=(3.2 * columns, 3.6 * rows), layout='constrained')
  axes = np.atleast_1d(fig.subplots(rows, columns)).ravel()
  for ax in axes:
    ax.axis('off')
  for ax, image, title in zip(axes, images, titles):
    ax.imshow(image, cmap='gray', vmin=0, vmax=255)
    ax.set_title(title, fontsize='small')
  fig.suptitle(suptitle)
  return fig


def explanation(image, maps: dict[str, np.ndarray], title: str) -> Figure:
  """The model's input image [H, W] beside each named heat map [H, W] in [0, 1] overlaid on it."""
  fig = Figure(figsize=(4 * (1 + len(maps)), 4.4), layout='constrained')
  axes = fig.subplots(1, 1 + len(maps))
  axes[0].imshow(image, cmap='gray')
  axes[0].set_title('Model input')
  for ax, (name, heat) in zip(axes[1:], maps.items()):
    ax.imshow(image, cmap='gray')
    shown = ax.imshow(heat, cmap='jet', alpha=0.45, vmin=0, vmax=1)
    ax.set_title(name)
    fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04, label='relative importance')
  for ax in axes:
    ax.axis('off')
  fig.suptitle(title)
  return fig
