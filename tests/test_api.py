"""The Python API (`pneumojax.load_run`): the README's example, the inputs it takes, and the same numbers as the
commands that call it."""

import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

import pneumojax
from pneumojax import api, cli
from pneumojax.data import images as images_lib
from pneumojax.data import pipeline
from pneumojax.trained import evaluate, explain, load
from tests.helpers import FULLRES, OOD, REPO, SHARED

FILM = OOD / '00000001_000.png'  # an 8-bit grayscale PNG


def test_importing_pneumojax_is_cheap_and_the_api_loads_on_first_use():
  script = ('import sys, pneumojax\n'
            'assert not {"jax", "tensorflow"} & set(sys.modules), "imported too early"\n'
            'assert pneumojax.load_run is pneumojax.api.load_run and "jax" in sys.modules\n')
  subprocess.run([sys.executable, '-c', script], cwd=REPO, check=True, timeout=300)
  with pytest.raises(AttributeError, match="no attribute 'lod_run'"):
    pneumojax.lod_run  # noqa: B018 -- a typo is an AttributeError, not a lazy import


def test_the_readme_example_runs(trained_run, tmp_path, monkeypatch, capsys):
  _, workdir, _ = trained_run
  readme = (REPO / 'README.md').read_text()
  example = re.search(r'## Python API\n.*?```python\n(.*?)```', readme, re.DOTALL).group(1)
  assert "'runs/quickstart'" in example and '../shared' in example
  example = example.replace("'runs/quickstart'", repr(str(workdir))).replace('../shared', str(SHARED))
  monkeypatch.chdir(tmp_path)
  exec(compile(example, 'README.md', 'exec'), {})  # noqa: S102 -- the README's own code
  printed = capsys.readouterr().out
  assert printed.count('P(pneumonia) = ') == 3
  assert (tmp_path / 'roc.png').stat().st_size > 10_000


def test_arrays_and_pil_images_are_predicted_as_their_files(trained_run):
  _, workdir, _ = trained_run
  run = api.load_run(workdir)
  with Image.open(FILM) as image:
    pil = image.copy()
  pixels = np.asarray(pil)
  assert pixels.dtype == np.uint8 and pixels.ndim == 2
  inputs = [FILM, str(FILM), pil, pil.convert('RGB'), pixels, pixels / 255.0,
            pixels.astype(np.uint16) * 257 + (pixels == 0)]  # 16-bit, scaled by its range as files are
  inputs[-1][0, 0], inputs[-1][0, 1] = 0, 65535
  out = run.predict(inputs)
  expected = run.predict(FILM)
  assert out.probabilities.shape == (len(inputs), 2) and out.labels[0] in run.class_names
  np.testing.assert_allclose(out.probabilities[:-1], np.repeat(expected.probabilities, len(inputs) - 1, 0), atol=1e-6)
  np.testing.assert_allclose(out.ood_scores[:-1], expected.ood_scores[0], rtol=1e-5)
  batch = run.predict(np.stack([pixels[:512, :512]] * 3))  # a 3-D array: a batch of grayscale images
  assert batch.probabilities.shape == (3, 2) and len(set(batch.labels)) == 1


def test_bad_arrays_are_clear_errors(trained_run):
  _, workdir, _ = trained_run
  run = api.load_run(workdir)
  with pytest.raises(ValueError, match=r'values in \[0, 1\]; this one spans \[0.0, 255.0\]: divide 8-bit values by 255'):
    run.predict(np.linspace(0, 255, 64 * 64).reshape(64, 64))
  with pytest.raises(ValueError, match='holds NaN'):
    run.predict(np.full((64, 64), np.nan))
  with pytest.raises(ValueError, match=r'must be 2-D \[H, W\] grayscale, not of shape \(2, 64, 64, 3\)'):
    run.predict(np.zeros((2, 64, 64, 3), np.uint8))
  with pytest.raises(ValueError, match='uint8, uint16 or float'):
    run.predict(np.zeros((64, 64), np.int64))
  with pytest.raises(ValueError, match='No images given'):
    run.predict([])


def test_maps_are_those_of_the_explainer_for_the_decided_class(trained_run):
  config, workdir, _ = trained_run
  run = api.load_run(workdir)
  files = [FULLRES / 'val' / 'PNEUMONIA' / 'person1946_bacteria_4874.jpeg', FILM]
  inputs = pipeline.eval_images(np.stack([images_lib.read_image(f, config.data)[0] for f in files])[..., None],
                                config.data).numpy()
  loaded = load.load_run(workdir)
  explainer = explain.Explainer(loaded.model, loaded.variables)
  decided = [run.class_names.index(label) for label in run.predict(files).labels]
  np.testing.assert_allclose(run.grad_cam(files), explainer.grad_cam(inputs, decided), atol=1e-6)
  other = [1 - c for c in decided]
  np.testing.assert_allclose(run.grad_cam(files, other), explainer.grad_cam(inputs, other), atol=1e-6)
  occlusion = run.occlusion(files[0])
  assert occlusion.shape == (64, 64)
  np.testing.assert_allclose(occlusion, explainer.occlusion(inputs[0], decided[0]), atol=1e-6)


def test_metrics_and_figures_are_those_of_pneumojax_eval(trained_run, tmp_path):
  _, workdir, _ = trained_run
  run = api.load_run(workdir)
  copy = shutil.copytree(workdir, tmp_path / 'run', ignore=shutil.ignore_patterns('eval', 'report.html'))
  metrics = api.load_run(copy).metrics('test')
  assert not (copy / 'eval').exists()  # metrics() computes; evaluate() (`pneumojax eval`) also writes
  assert run.metrics('test', bootstrap_samples=10) is run.metrics('test', bootstrap_samples=10)  # evaluated once
  figures = run.figures('test')
  assert set(figures) == {'roc', 'pr', 'confusion_matrix', 'calibration', 'training_curves', 'errors'}
  assert all(isinstance(figure, Figure) for figure in figures.values())
  cli.main(['eval', '--workdir', str(copy), '--split', 'test'])
  saved = json.loads((copy / 'eval' / 'test' / evaluate.METRICS).read_text())
  assert json.loads(json.dumps(metrics, default=str)) == saved
