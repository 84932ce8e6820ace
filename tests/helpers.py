"""Helpers shared by the test files and by the scripts they run in subprocesses: where the shared data is, small
configs, and a synthetic dataset in the Kaggle layout for the hermetic tests."""

import io
from pathlib import Path

import numpy as np
from PIL import Image

from pneumojax.config import default_config

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / 'shared'
CHEST_XRAY = SHARED / 'data' / 'chest_xray'
FULLRES = SHARED / 'data' / 'chest_xray_fullres_sample'
OOD = SHARED / 'data' / 'ood_chest_xrays'

# Five pneumonia (1) and five normal (0) examples, interleaved. At threshold 0.5:
#   pneumonia scores 0.95 0.8 0.7 0.55 | 0.3   -> TP = 4, FN = 1
#   normal    scores 0.9 0.6 | 0.45 0.2 0.1    -> FP = 2, TN = 3
LABELS = np.array([1, 0, 1, 0, 1, 0, 1, 0, 1, 0])
SCORES = np.array([0.95, 0.9, 0.8, 0.6, 0.7, 0.45, 0.55, 0.2, 0.3, 0.1], np.float32)


def data_config(data_dir, manual_dir=None, resolution=64, **overrides):
  config = default_config().data
  config.update(dict(data_dir=str(data_dir), manual_dir=manual_dir and str(manual_dir), resolution=resolution,
                     **overrides))
  return config


def tiny_config(tfds_dir, num_steps, manual_dir=CHEST_XRAY, resolution=64):
  """A small CNN on the prepared data of `tfds_dir`, validated every 3 steps."""
  config = default_config()
  config.data.update(dict(data_dir=str(tfds_dir), manual_dir=str(manual_dir), resolution=resolution))
  config.model.kwargs = {'widths': (8, 16)}
  config.optim.schedule = 'constant'  # so that a 3-step run continued to 6 equals a 6-step run
  config.train.update(dict(batch_size=32, eval_batch_size=256, num_steps=num_steps, eval_every_steps=3,
                           log_every_steps=2))
  return config


def final_state(config, workdir):
  """The train state of the latest checkpoint in `workdir`."""
  from pneumojax.train import checkpoint, run  # Deferred: JAX and TensorFlow only where a test trains.
  with checkpoint.Checkpointer(workdir) as ckpt:
    return ckpt.restore(ckpt.latest_step(), run.abstract_state(config))


NUM_STEPS = 40  # of robust_config: long enough to be interrupted after its first checkpoint


def robust_config(tfds_dir, process_id=-1, num_processes=0, port=0):
  """tiny_config for 40 steps, validated every 10, in one of `num_processes` processes if given."""
  config = tiny_config(tfds_dir, NUM_STEPS)
  config.train.eval_every_steps = 10
  if num_processes:
    config.distributed.update(dict(initialize=True, coordinator_address=f'localhost:{port}',
                                   num_processes=num_processes, process_id=process_id))
  return config


def blank_png(size, mode='L') -> bytes:
  buffer = io.BytesIO()
  Image.new(mode, size).save(buffer, format='PNG', compress_level=1)
  return buffer.getvalue()


# Images per split: (normal, bacteria, virus).
SYNTHETIC_COUNTS = {'train': (16, 8, 8), 'val': (2, 1, 1), 'test': (6, 3, 3)}


def write_synthetic_dataset(root, size=40, seed=0) -> Path:
  """A tiny chest X-ray dataset in the Kaggle layout (`root/chest_xray/<split>/<CLASS>/`, original file names),
  whose classes a model can tell apart: every film is a dark noisy gradient, and pneumonia films carry a bright
  blurred opacity somewhere in the middle. One image per patient; returns the dataset's folder."""
  rng = np.random.default_rng(seed)
  rows, cols = np.mgrid[:size, :size]
  patient = 0
  for split, (normal, bacteria, virus) in SYNTHETIC_COUNTS.items():
    names = [('NORMAL', f'{"NORMAL2-" if i % 2 else ""}IM-{patient + i:04d}-0001.jpeg') for i in range(normal)]
    names += [('PNEUMONIA', f'person{patient + i}_bacteria_{i + 1}.jpeg') for i in range(bacteria)]
    names += [('PNEUMONIA', f'person{patient + bacteria + i}_virus_{i + 1}.jpeg') for i in range(virus)]
    patient += normal + bacteria + virus
    for label, name in names:
      pixels = 40 + 60 * rows / size + rng.normal(0, 8, (size, size))
      if label == 'PNEUMONIA':
        centre = rng.uniform(0.3, 0.7, 2) * size
        pixels += 140 * np.exp(-((rows - centre[0])**2 + (cols - centre[1])**2) / (2 * (size / 6)**2))
      folder = Path(root) / 'chest_xray' / split / label
      folder.mkdir(parents=True, exist_ok=True)
      Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / name, quality=95)
  return Path(root) / 'chest_xray'


def tiny_backbone():
  """A backbone of one dense layer with the shared head: enough to tell the head's updates from the backbone's."""
  import flax.linen as nn

  from pneumojax.models.base import Classifier

  class TinyBackbone(Classifier):

    @nn.compact
    def __call__(self, x, train: bool):
      return self.classify(nn.relu(nn.Dense(8, name='dense')(x.reshape(x.shape[0], -1))), train)

  return TinyBackbone()


def pretrained_run_config(tfds_dir, tmp_path, **train):
  """A resnet18 (8 filters) on the 64 px data starting from random "pretrained" variables: (config, variables)."""
  import jax

  from pneumojax import models, weights
  config = default_config()
  config.data.update({'data_dir': str(tfds_dir), 'manual_dir': str(CHEST_XRAY), 'resolution': 64, 'channels': 3})
  config.model.update({'name': 'resnet18', 'kwargs': {'num_filters': 8}, 'init_from': str(tmp_path / 'pretrained')})
  config.train.update(train)
  backbone = models.get_model('resnet18', num_filters=8, features_only=True)
  pretrained = backbone.init(jax.random.key(0, impl='rbg'), np.zeros((1, 64, 64, 3), np.float32), train=False)
  pretrained['batch_stats'] = jax.tree.map(lambda s: s + 0.5, pretrained['batch_stats'])  # Unlike a fresh model's.
  weights.save(tmp_path / 'pretrained', pretrained)
  return config, pretrained


def assert_best_checkpoint_keeps(workdir, pretrained):
  """The best checkpoint of the run in `workdir` holds the `pretrained` backbone variables unchanged."""
  import jax

  from pneumojax.trained import load
  best = load.load_run(workdir).state
  jax.tree.map(np.testing.assert_array_equal, {k: v for k, v in best.params.items() if k != 'head'},
               pretrained['params'])
  jax.tree.map(np.testing.assert_array_equal, best.batch_stats, pretrained['batch_stats'])


def outcome(results) -> str:
  """A run's chosen checkpoint and its metrics, as comparable text (an undefined metric is NaN, which equals
  nothing)."""
  import json
  return json.dumps({k: results.get(k) for k in ('checkpoint_step', 'val', 'test', 'test_at_val_threshold')},
                    sort_keys=True, default=str)


# Trains robust_config in a fresh process: `python -c TRAIN_SCRIPT tfds_dir workdir [process_id num_processes port]`.
TRAIN_SCRIPT = '''
import sys
from pneumojax import train
from pneumojax.train import preemption
from tests.helpers import robust_config
tfds_dir, workdir, *process = sys.argv[1:]
try:
  train.train_and_evaluate(robust_config(tfds_dir, *map(int, process)), workdir)
except preemption.Interrupted as e:
  print(e, flush=True)
  sys.exit(e.exit_code)
'''


def start_training(tfds_dir, workdir, *process, devices=1):
  """A subprocess training robust_config in `workdir` on `devices` CPU devices; `process`: (process_id,
  num_processes, coordinator port) of a multi-process run."""
  import os
  import subprocess
  import sys
  env = {**os.environ, 'PYTHONPATH': str(REPO), 'JAX_PLATFORMS': 'cpu',
         'XLA_FLAGS': f'--xla_force_host_platform_device_count={devices}'}
  return subprocess.Popen([sys.executable, '-c', TRAIN_SCRIPT, str(tfds_dir), str(workdir), *map(str, process)],
                          cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def robust_state(tfds_dir, workdir, step=None):
  """The train state of robust_config saved at `step` (default: the latest) in `workdir`."""
  from pneumojax.train import checkpoint, run
  with checkpoint.Checkpointer(workdir) as ckpt:
    return ckpt.restore(ckpt.latest_step() if step is None else step, run.abstract_state(robust_config(tfds_dir)))


def result_file_writers() -> dict:
  """{result file: a function writing it to a workdir with a value}, each file over 64 bytes."""
  from pneumojax.train import files, test_history
  return {
      files.RESULTS: lambda workdir, value: files.save_results(workdir, {'test': {'auc': value}, 'x': 'x' * 200}),
      files.THRESHOLD: lambda workdir, value: files.save_threshold(
          workdir, {'threshold': value, 'rule': 'x' * 200, 'chosen_on': 'val_pd', 'checkpoint_step': 3}),
      files.TEST_HISTORY: lambda workdir, value: test_history.record(workdir, [], 3, {'auc': value, 'x': 'x' * 200}),
  }


def refuse_to_read_split(monkeypatch, split: str) -> None:
  """Every reader of a split (the TFDS builder's `as_dataset`, the metadata, and `load_split`, under the tf.data
  pipeline and the data on the devices) raises AssertionError when asked for `split`, and reads the others."""
  from pneumojax.data import builder as builder_lib
  from pneumojax.data import splits

  def guarded(read):
    def reader(builder, name=None, *args, **kwargs):
      if kwargs.get('split', name) == split:
        raise AssertionError(f'the {split!r} split was read')
      return read(builder, name, *args, **kwargs) if name is not None else read(builder, *args, **kwargs)
    return reader
  monkeypatch.setattr(builder_lib.ChestXrayPneumonia, 'as_dataset',
                      guarded(builder_lib.ChestXrayPneumonia.as_dataset))
  for name in ('read_metadata', 'split_metadata', 'load_split'):  # read_metadata's cache would skip as_dataset
    monkeypatch.setattr(splits, name, guarded(getattr(splits, name)))


SWEPT_LEARNING_RATES = [1e-3, 3e-3]  # the grid of the `swept` fixture (conftest.py), with these seeds:
SWEPT_SEEDS = [0, 1]


def write_sweep(tmp_path, tfds_dir, grid, seeds, num_steps=4):
  """A config file of tiny_config (64 px, `num_steps` steps) and a sweep file over it, with validation every 2
  steps and the test-selected report; returns the loaded sweep."""
  from pneumojax.studies import sweep
  (tmp_path / 'tiny.py').write_text(
      'from tests.helpers import tiny_config\n\n\n'
      f'def get_config():\n  return tiny_config({str(tfds_dir)!r}, {num_steps})\n')
  (tmp_path / 'grid.py').write_text(
      f'def get_sweep():\n  return {{"config": {str(tmp_path / "tiny.py")!r}, "grid": {grid!r}, "seeds": {seeds!r},\n'
      '          "overrides": {"train.eval_every_steps": 2, "eval.report_test_selected": True}}\n')
  return sweep.load_sweep(str(tmp_path / 'grid.py'))
