"""The experiment configs and ablation sweeps of experiments/: they load, keep the papers' settings and pass the
preflight check."""

import glob
import importlib.util
from pathlib import Path

import pytest

from pneumojax import config as config_lib
from pneumojax.studies import reproduction, sweep
from pneumojax.train import preflight
from tests.helpers import REPO

pytestmark = pytest.mark.smoke


def _config_args(path: str) -> list[str]:
  """Every ARG an experiments/*.py config takes (its module's lists), or none."""
  spec = importlib.util.spec_from_file_location('config_under_test', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  name = Path(path).stem
  if name == 'kermany2018':
    return [f'{b},{t}' for b in module.BACKBONES for t in module.TASKS]
  if name == 'jain2020':
    return list(module.MODELS)
  if name == 'medmnist':
    return [f'{r},{m}' for r in module.RESOLUTIONS for m in module.MODELS]
  return ['']


CONFIGS = sorted(glob.glob(str(REPO / 'experiments' / '*.py')))
ABLATIONS = sorted(glob.glob(str(REPO / 'experiments' / 'ablations' / '*.py')))


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: Path(p).stem)
def test_every_experiment_config_loads_and_validates(path, tmp_path):
  for arg in _config_args(path):
    config = config_lib.load_config(['--config', f'{path}:{arg}' if arg else path])
    preflight.check(config, str(tmp_path))
    if config.train.cached_features:
      assert config.model.init_from, 'a linear probe needs pretrained weights'


def test_paper_configs_keep_the_papers_hyperparameters():
  med = config_lib.load_config(['--config', str(REPO / 'experiments/medmnist.py:28,resnet50')])
  assert (med.optim.name, med.optim.learning_rate, med.optim.schedule, tuple(med.optim.step_epochs),
          med.optim.step_factor, med.train.batch_size, med.train.num_epochs, med.data.resize,
          med.data.resolution, med.model.name) == ('adam', 1e-3, 'step', (0.5, 0.75), 0.1, 128, 100, 'crop', 28,
                                                   'resnet50')
  kermany = config_lib.load_config(
      ['--config', str(REPO / 'experiments/kermany2018.py:mobilenet_v2,bacteria_vs_virus')])
  assert kermany.train.cached_features and kermany.data.task == 'bacteria_vs_virus'
  assert kermany.model.kwargs.alpha == 0.35 and kermany.eval.report_test_selected
  with pytest.raises(SystemExit, match='BACKBONE'):
    config_lib.load_config(['--config', str(REPO / 'experiments/kermany2018.py:resnet18')])


@pytest.mark.parametrize('path', ABLATIONS, ids=lambda p: Path(p).stem)
def test_every_ablation_sweep_loads_and_each_run_validates(path, tmp_path, monkeypatch):
  monkeypatch.chdir(REPO)  # sweep files name their base config relative to the repository
  definition = sweep.load_sweep(path)
  runs = sweep.expand(definition)
  assert len(runs) >= 2 and len({r.name for r in runs}) == len(runs)
  for run in runs:
    config = sweep.run_config(definition, run, [])
    preflight.check(config, str(tmp_path))
    for key, value in run.overrides.items():
      node = config
      for part in key.split('.'):
        node = node[part]
      assert node == value, key


def test_every_setup_of_the_papers_file_names_a_config_that_loads():
  setups = reproduction.load_setups(REPO / 'experiments' / 'papers.json')
  assert len({s.name for s in setups}) == len(setups) >= 12
  for setup in setups:
    path, arg = setup.config.split(':')
    config = config_lib.load_config(['--config', f'{REPO / path}:{arg}'])
    assert set(setup.paper) <= set(reproduction.METRICS), setup.name
    assert (config.data.task == 'bacteria_vs_virus') == ('bacteria_vs_virus' in setup.name), setup.name
