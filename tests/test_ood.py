"""Out-of-distribution scores: the Mahalanobis distances, the features they are computed on, the detector stored
in the workdir, and what it flags on a trained run."""

import functools
import shutil

import flax.linen as nn
import jax
import numpy as np
import pytest
from PIL import Image

from pneumojax import api, models
from pneumojax.evaluation import ood as ood_lib
from pneumojax.trained import load, ood, predict
from tests.helpers import CHEST_XRAY, SHARED

NATURAL_IMAGES = SHARED / 'weights' / 'natural_images'


def test_distances_are_mahalanobis_to_the_nearest_class_mean():
  rng = np.random.default_rng(0)
  covariance = np.array([[4.0, 1.0], [1.0, 1.0]])
  means = np.array([[0.0, 0.0], [10.0, 0.0]])
  labels = rng.integers(0, 2, 20_000)
  features = means[labels] + rng.multivariate_normal([0, 0], covariance, len(labels))
  gaussians = ood_lib.fit(features, labels, 2)
  np.testing.assert_allclose(gaussians.means, means, atol=0.05)
  np.testing.assert_allclose(gaussians.precision, np.linalg.inv(covariance), rtol=0.05)
  # Along the long axis of the covariance a point is nearer than across it; the nearer class mean counts.
  points = np.array([[2.0, 0.0], [0.0, 2.0], [8.0, 0.0], gaussians.means[1]])
  expected = [np.sqrt(min((p - m) @ gaussians.precision @ (p - m) for m in gaussians.means)) for p in points]
  distances = ood_lib.distances(gaussians, points)
  np.testing.assert_allclose(distances, expected, rtol=1e-10)
  assert distances[0] < distances[1] and distances[3] == 0


def test_a_class_without_training_features_is_an_error():
  with pytest.raises(ValueError, match=r'No training features of class \[2\]'):
    ood_lib.fit(np.zeros((4, 3)), np.array([0, 1, 0, 1]), 3)


@pytest.mark.parametrize('name, kwargs', [
    ('simple_cnn', {'widths': (8, 16)}),       # its own Dense head: the pooled features
    ('resnet18', {'num_filters': 8}),          # the shared head's output layer: the pooled features
    ('resnet18', {'num_filters': 8, 'hidden': (12,)}),  # a hidden head layer: its relu output
])
def test_features_are_the_input_of_the_last_dense_layer(name, kwargs):
  model = models.get_model(name, num_classes=2, **kwargs)
  images = jax.random.normal(jax.random.key(1), (3, 64, 64, 1))
  variables = jax.jit(lambda x: model.init(jax.random.key(0), x, train=False))(images)
  probs, features = jax.jit(lambda v, x: ood.outputs(model, v, x))(variables, images)
  np.testing.assert_allclose(probs, jax.nn.softmax(model.apply(variables, images, train=False)), atol=1e-6)
  if kwargs.get('hidden'):
    pooled = model.clone(features_only=True).apply(variables, images, train=False)
    hidden = variables['params']['head']['hidden0']
    expected = nn.relu(pooled @ hidden['kernel'] + hidden['bias'])
  else:
    expected = model.clone(features_only=True).apply(variables, images, train=False)
  assert features.shape == expected.shape
  np.testing.assert_allclose(features, expected, atol=1e-5)


def _unlike_x_rays(folder) -> list:
  """Paths of blank and noise images written to `folder`; the natural photographs of ../shared."""
  rng = np.random.default_rng(0)
  made = {'black': np.zeros((256, 256)), 'white': np.full((256, 256), 255), 'gray': np.full((256, 256), 128),
          'uniform_noise': rng.integers(0, 256, (256, 256)), 'gaussian_noise': rng.normal(128, 40, (256, 256))}
  for name, pixels in made.items():
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / f'{name}.png')
  return sorted(folder.glob('*.png')) + sorted(NATURAL_IMAGES.glob('*.jpg'))


def _assert_flags_photographs_blank_and_noise_but_few_test_films(workdir, folder, photographs: bool = True):
  unlike = _unlike_x_rays(folder)
  if not photographs:
    unlike = [path for path in unlike if path.parent == folder]
  run = api.load_run(workdir)
  flagged = run.predict(unlike)
  assert flagged.ood.all(), dict(zip([path.name for path in unlike], flagged.ood_scores))
  test = run.predict(sorted((CHEST_XRAY / 'test').rglob('*.jpeg')), batch_size=256)
  assert len(test.ood) == 624 and test.ood.mean() <= 0.05, test.ood.mean()


def test_blank_and_noise_images_are_flagged_but_few_test_films(trained_run, tmp_path):
  """On the 6-step model; photographs too on the quickstart model (test_quickstart_flags_...)."""
  _, workdir, _ = trained_run
  _assert_flags_photographs_blank_and_noise_but_few_test_films(workdir, tmp_path, photographs=False)


@pytest.mark.slow
def test_quickstart_flags_photographs_blank_and_noise_images_but_few_test_films(quickstart_run, tmp_path):
  _, workdir, _ = quickstart_run
  _assert_flags_photographs_blank_and_noise_but_few_test_films(workdir, tmp_path)


def _detector(workdir, step=None) -> ood.Detector:
  run = load.load_run(workdir, step)
  return ood.detector(run, jax.jit(functools.partial(ood.outputs, run.model)))


def test_the_detector_is_stored_reused_and_refitted_for_another_checkpoint(trained_run, tmp_path, monkeypatch):
  _, workdir, _ = trained_run
  copy = shutil.copytree(workdir, tmp_path / 'run', ignore=shutil.ignore_patterns(ood.FILE))
  fitted = _detector(copy)
  with np.load(copy / ood.FILE) as stored:
    assert int(stored['checkpoint_step']) == fitted.checkpoint_step and float(stored['threshold']) == fitted.threshold
  fits = []
  real_fit = ood._fit
  monkeypatch.setattr(ood, '_fit', lambda *args: fits.append(1) or real_fit(*args))
  reused = _detector(copy)
  assert not fits and reused.threshold == fitted.threshold
  np.testing.assert_array_equal(reused.gaussians.precision, fitted.gaussians.precision)
  assert fitted.checkpoint_step == 6
  earlier = _detector(copy, step=3)  # another checkpoint: fitted again, the file replaced
  assert fits == [1] and earlier.checkpoint_step == 3 and earlier.threshold != fitted.threshold
  with np.load(copy / ood.FILE) as stored:
    assert int(stored['checkpoint_step']) == 3


def test_fitting_without_the_data_says_what_is_missing(trained_run, tmp_path):
  _, workdir, _ = trained_run
  copy = shutil.copytree(workdir, tmp_path / 'run', ignore=shutil.ignore_patterns(ood.FILE))
  run = load.load_run(copy)
  run.config.data.update(dict(data_dir=str(tmp_path / 'no_data'), manual_dir=None))
  with pytest.raises(FileNotFoundError, match=r"ood.npz is missing, and fitting it needs the run's 'train_pd' and "
                                              r"'val_pd' data: The dataset .* is not prepared"):
    predict.Predictor(run)
