"""Grad-CAM and occlusion: exact maps of a model with known evidence, real models, and `pneumojax explain`."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from pneumojax import cli, models
from pneumojax.data import images as images_lib
from pneumojax.data import pipeline
from pneumojax.trained import explain, load
from tests.helpers import FULLRES, OOD


class TopLeftModel(nn.Module):
  """Logits [0, mean of the top-left quadrant of an identity 1x1 conv's output]: the evidence is known."""

  @nn.compact
  def __call__(self, x, train: bool):
    features = nn.Conv(1, (1, 1), use_bias=False, kernel_init=nn.initializers.ones)(x)
    half = x.shape[1] // 2
    score = features[:, :half, :half, 0].mean(axis=(1, 2))
    return jnp.stack([jnp.zeros_like(score), score], axis=-1)


def _images(count, size=32, seed=0):
  return jax.random.uniform(jax.random.key(seed), (count, size, size, 1), minval=0.1, maxval=1.0)


def test_grad_cam_of_a_known_model():
  model = TopLeftModel()
  images = _images(2)
  variables = model.init(jax.random.key(0), images, train=False)
  explainer = explain.Explainer(model, variables)
  assert explain.feature_layer(model, variables, images)[0] == ('Conv_0',)
  # dScore/dA is 1/256 on the quadrant and 0 elsewhere: one positive channel weight, so the map is A = x itself,
  # divided by its maximum.
  maps = explainer.grad_cam(images, [1, 1])
  expected = images[..., 0] / images.max(axis=(1, 2, 3))[:, None, None]
  np.testing.assert_allclose(maps, expected, rtol=1e-5)
  np.testing.assert_array_equal(explainer.grad_cam(images, [0, 0]), 0)  # a constant logit has no evidence


def test_occlusion_of_a_known_model():
  model = TopLeftModel()
  image = np.array(_images(1, seed=1))[0]
  image[:16, :16] += 1.0  # brighter than the mean: covering it lowers the score
  explainer = explain.Explainer(model, model.init(jax.random.key(0), image[None], train=False))
  heat = explainer.occlusion(image, target=1, patch=4)
  assert heat.shape == (32, 32) and heat.max() == 1.0
  assert np.all(heat[:12, :12] > 0.5)  # every patch over here lies inside the quadrant
  # Patches start every 2 px: from row 18 on, every patch covering a pixel starts below the quadrant.
  np.testing.assert_array_equal(heat[18:, :], 0)
  np.testing.assert_array_equal(heat[:, 18:], 0)
  assert np.all(heat[16:18, :16] > 0)  # a patch from row 14 reaches them and the quadrant


@pytest.mark.parametrize('name, kwargs, features', [
    ('simple_cnn', {'widths': (8, 16)}, (32, 32, 16)),  # the last block's BatchNorm, before its pooling
    ('jain_model1', {}, (14, 14, 64)),                   # the last block's dropout, after its pooling
    ('resnet18', {'num_filters': 8}, (2, 2, 64)),        # the last residual block
])
def test_grad_cam_of_the_cnn_families(name, kwargs, features):
  model = models.get_model(name, num_classes=2, **kwargs)
  images = _images(2, size=64, seed=2)
  variables = jax.jit(lambda x: model.init(jax.random.key(0), x, train=False))(images)
  assert explain.feature_layer(model, variables, images)[1].shape == (2, *features)
  maps = explain.Explainer(model, variables).grad_cam(images, [1, 1])
  assert maps.shape == (2, 64, 64) and np.all(np.isfinite(maps))
  assert np.all((maps >= 0) & (maps <= 1))


def test_grad_cam_of_a_trained_model_on_two_x_rays(trained_run):
  config, workdir, _ = trained_run
  run = load.load_run(workdir)
  files = [FULLRES / 'val' / 'PNEUMONIA' / 'person1946_bacteria_4874.jpeg',
           FULLRES / 'val' / 'NORMAL' / 'NORMAL2-IM-1427-0001.jpeg']
  pixels = np.stack([images_lib.read_image(path, config.data)[0] for path in files])[..., None]
  images = pipeline.eval_images(pixels, config.data).numpy()
  explainer = explain.Explainer(run.model, run.variables)
  maps = explainer.grad_cam(images, [1, 1])
  assert maps.shape == (2, 64, 64) and np.all(np.isfinite(maps))
  np.testing.assert_allclose(maps.max(axis=(1, 2)), 1.0, rtol=1e-6)  # some evidence in each, scaled to [0, 1]
  assert np.abs(maps[0] - maps[1]).mean() > 0.05  # two X-rays, two maps


def test_explain_command_writes_overlays(trained_run, tmp_path):
  _, workdir, _ = trained_run
  files = [FULLRES / 'val' / 'PNEUMONIA' / 'person1947_bacteria_4876.jpeg', OOD / '00027426_000.png']
  cli.main(['explain', '--workdir', str(workdir), '--images', *map(str, files), '--out', str(tmp_path)])
  for path in files:
    with Image.open(tmp_path / f'{path.stem}.png') as image:
      assert image.format == 'PNG' and image.width > 900 and image.height > 350
