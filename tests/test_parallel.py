"""pmap and jit+shard_map compute the same steps on 1, 2 and 4 CPU devices.

The device count is fixed when jax starts, so each count runs this file as a script in a subprocess with
XLA_FLAGS set; the script prints its results as JSON and the tests compare them. A slow test also runs it as
two processes of two devices each, which must match one process of four.
"""

import functools
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import optax
import pytest

from pneumojax import models
from pneumojax.config import default_config
from pneumojax.data import device
from pneumojax.train import step
from pneumojax.train.parallel import AXIS, DataParallel
from pneumojax.train.state import create_train_state

REPO = Path(__file__).resolve().parents[1]

DEVICE_COUNTS = (1, 2, 4)
GLOBAL_BATCH = 8
NUM_PADDING = 3  # on 4 devices the last shard is all padding, the one before half.
CLASS_WEIGHTS = (0.5, 2.0)
NUM_STEPS = 3
# Built as run.build_model builds models: BatchNorm and dropout over the global batch of the 'batch' axis.
MODELS = {
    'bn_dropout': {'widths': (4, 8), 'batch_axis': 'batch'},
    'bn_dropout_flax': {'widths': (4, 8), 'batch_axis': 'batch', 'layers': 'flax'},
    'plain': {'widths': (4, 8), 'use_bn': False, 'dropout_rate': 0.0},
}
RUNS = ('bn_dropout/pmap', 'bn_dropout/jit', 'bn_dropout_flax/jit', 'plain/jit')  # model/mode
DEVICE_DATA_RUNS = ('pmap', 'jit')  # the same steps with the data on the devices (data/device.py)


def _batch(seed):
  rng = np.random.default_rng(seed)
  mask = np.ones(GLOBAL_BATCH, np.float32)
  mask[GLOBAL_BATCH - NUM_PADDING:] = 0
  return {'image': rng.normal(size=(GLOBAL_BATCH, 32, 32, 1)).astype(np.float32),
          'label': rng.integers(0, 2, GLOBAL_BATCH).astype(np.int32), 'mask': mask}


def _local(batch):
  """This process's slice of a global batch."""
  n = len(batch['label']) // jax.process_count()
  return {k: v[jax.process_index() * n:(jax.process_index() + 1) * n] for k, v in batch.items()}


def _run_worker():
  """In the subprocess: train a few steps per model and mode, evaluate, and print the results as JSON."""
  train_step = functools.partial(step.train_step, class_weights=np.array(CLASS_WEIGHTS, np.float32))
  results = {}
  for run in RUNS:
    model_name, mode = run.split('/')
    model = models.get_model('simple_cnn', **MODELS[model_name])
    # SGD, not Adam: Adam's normalisation would amplify summation-order noise in near-zero gradients.
    host_state = create_train_state(model, optax.sgd(0.1, momentum=0.9), jax.random.key(0, impl='rbg'),
                                    (32, 32, 1))
    dp = DataParallel(mode, train_step, step.eval_step)
    state = dp.replicate(host_state)
    roundtrip = dp.unreplicate(state)
    roundtrip_ok = all(jax.tree.leaves(jax.tree.map(np.array_equal, roundtrip.params, host_state.params)))
    losses = []
    for i in range(NUM_STEPS):
      state, metrics = dp.train_step(state, dp.shard(_local(_batch(i))))
      losses.append(dp.metrics_to_host(metrics)['loss'])
    eval_batch = _batch(100)
    outputs = dp.eval_step(state, dp.shard(_local(eval_batch)))
    # Every device holds the same state: gradients summed and BatchNorm statistics averaged over devices.
    replicas_identical = all(
        all(np.array_equal(shard.data, leaf.addressable_shards[0].data) for shard in leaf.addressable_shards)
        for leaf in jax.tree.leaves((state.params, state.batch_stats, state.opt_state)))
    final = dp.unreplicate(state)
    variables = {'params': final.params, **({'batch_stats': final.batch_stats} if final.batch_stats else {})}
    expected_probs = jax.nn.softmax(final.apply_fn(variables, eval_batch['image'], train=False))
    results[run] = {
        'losses': losses,
        'roundtrip_ok': roundtrip_ok,
        'replicas_identical': replicas_identical,
        'final_step': int(final.step),
        'eval_probs_error': float(np.abs(outputs['probs'] - expected_probs).max()),
        'eval_passthrough_ok': bool(np.array_equal(outputs['label'], eval_batch['label'])
                                    and np.array_equal(outputs['mask'], eval_batch['mask'])),
    }
  for mode in DEVICE_DATA_RUNS:
    results[f'device_data/{mode}'] = _device_data_run(mode, train_step)
  try:
    dp.shard(jax.tree.map(lambda x: x[:jax.local_device_count() + 1], _batch(0)))
    indivisible_error = None
  except ValueError as e:
    indivisible_error = str(e)
  print(json.dumps({'runs': results, 'indivisible_error': indivisible_error}))


def _device_data_run(mode, train_step):
  """Training steps whose augmented batches are made on the devices from a replicated split, and the split's
  evaluation on the devices."""
  data_config = default_config().data
  data_config.resolution = 32
  rng = np.random.default_rng(0)
  arrays = {'image': rng.integers(0, 256, (40, 32, 32, 1), dtype=np.uint8),
            'label': rng.integers(0, 2, 40).astype(np.int32), 'mask': np.ones(40, np.float32)}
  make_batch = functools.partial(device.train_batch, seed=0, batch_size=GLOBAL_BATCH, data_config=data_config,
                                 class_counts=tuple(np.bincount(arrays['label'], minlength=2).tolist()),
                                 axis_name=AXIS)
  model = models.get_model('simple_cnn', **MODELS['bn_dropout'])
  host_state = create_train_state(model, optax.sgd(0.1, momentum=0.9), jax.random.key(0, impl='rbg'), (32, 32, 1))
  dp = DataParallel(mode, train_step, make_train_batch=make_batch, steps_per_dispatch=2,
                    make_eval_batch=functools.partial(device.eval_batch, data_config=data_config),
                    eval_chunk=GLOBAL_BATCH // jax.device_count())
  state, on_devices = dp.replicate(host_state), dp.replicate(arrays)
  roundtrip = dp.unreplicate(dp.replicate(arrays))
  losses = []
  for num_steps in (2, 1):  # a full dispatch, then one of one real step
    state, metrics = dp.train_steps(state, on_devices, num_steps)
    losses += np.asarray(jax.device_get(metrics['loss'].addressable_data(0))).reshape(-1)[:num_steps].tolist()
  outputs = dp.eval_split(state, dp.put_sharded('eval', _local(arrays)))
  final = dp.unreplicate(state)
  expected = jax.nn.softmax(final.apply_fn({'params': final.params, 'batch_stats': final.batch_stats},
                                           device.eval_batch(arrays, data_config)['image'], train=False))
  return {'losses': losses, 'final_step': int(final.step),
          'roundtrip_ok': all(np.array_equal(roundtrip[k], v) for k, v in arrays.items()),
          'eval_passthrough_ok': bool(np.array_equal(outputs['label'], arrays['label'])),
          'replicas_identical': all(all(np.array_equal(shard.data, leaf.addressable_shards[0].data)
                                        for shard in leaf.addressable_shards) for leaf in jax.tree.leaves(state.params)),
          'eval_probs_error': float(np.abs(outputs['probs'] - expected).max())}


def _start_worker(num_devices, **env):
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, JAX_PLATFORMS='cpu', **env,
             XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={num_devices}",
             PYTHONPATH=os.pathsep.join(filter(None, [repo, os.environ.get('PYTHONPATH')])))
  return subprocess.Popen([sys.executable, os.path.abspath(__file__)], env=env, cwd=repo, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def _results(worker):
  stdout, stderr = worker.communicate(timeout=600)
  assert worker.returncode == 0, f'worker failed:\n{stderr[-5000:]}'
  return json.loads(stdout.strip().splitlines()[-1])


@pytest.fixture(scope='module')
def results():
  """{device count: the worker's results}; one subprocess per count, run one after another."""
  return {n: _results(_start_worker(n)) for n in DEVICE_COUNTS}


@pytest.mark.parametrize('n', DEVICE_COUNTS)
def test_pmap_and_jit_give_the_same_losses(results, n):
  pmap, jit = results[n]['runs']['bn_dropout/pmap'], results[n]['runs']['bn_dropout/jit']
  np.testing.assert_allclose(pmap['losses'], jit['losses'], rtol=1e-6)
  assert pmap['final_step'] == jit['final_step'] == NUM_STEPS


@pytest.mark.parametrize('run', RUNS + tuple(f'device_data/{mode}' for mode in DEVICE_DATA_RUNS))
def test_losses_do_not_depend_on_the_device_count(results, run):
  """Synchronised BatchNorm and global-batch dropout masks: splitting the global batch over 1, 2 or 4 devices
  computes the same steps, up to float rounding (the order of the sums)."""
  losses = {n: results[n]['runs'][run]['losses'] for n in DEVICE_COUNTS}
  assert losses[1][-1] != losses[1][0]  # the parameters did move.
  for n in DEVICE_COUNTS[1:]:
    np.testing.assert_allclose(losses[n], losses[1], rtol=1e-5, err_msg=f'{n} devices vs 1')


@pytest.mark.parametrize('n', DEVICE_COUNTS)
def test_state_stays_replicated_and_eval_gathers_in_order(results, n):
  for name, result in results[n]['runs'].items():
    assert result['roundtrip_ok'], name
    assert result['replicas_identical'], name
    # Gathered per-example outputs in global example order: they match the whole batch on one device.
    assert result['eval_probs_error'] < 1e-5, name
    assert result['eval_passthrough_ok'], name


@pytest.mark.parametrize('n', DEVICE_COUNTS[1:])
def test_indivisible_batch_is_a_clear_error(results, n):
  message = results[n]['indivisible_error']
  assert message is not None
  assert f'global batch size {n + 1}' in message and f'number of devices {n}' in message
  assert 'train.batch_size' in message


def test_evaluation_needs_no_train_step():
  dp = DataParallel('jit')
  model = models.get_model('simple_cnn', **MODELS['plain'])
  state = dp.replicate(create_train_state(model, optax.sgd(0.1), jax.random.key(0, impl='rbg'), (32, 32, 1)))
  outputs = dp.eval_step(state, dp.shard(_batch(0)))
  assert outputs['probs'].shape == (GLOBAL_BATCH, 2) and np.array_equal(outputs['mask'], _batch(0)['mask'])
  with pytest.raises(ValueError, match='for evaluation only: pass train_step='):
    dp.train_step(state, dp.shard(_batch(0)))


@pytest.mark.slow
def test_two_processes_match_one(results):
  with socket.socket() as s:
    s.bind(('localhost', 0))
    port = s.getsockname()[1]
  workers = [_start_worker(2, PNEUMOJAX_TEST_PROCESS=f'{i},2,{port}') for i in range(2)]
  for process_results in [_results(worker)['runs'] for worker in workers]:
    for name, result in process_results.items():
      np.testing.assert_allclose(result['losses'], results[4]['runs'][name]['losses'], rtol=1e-6, err_msg=name)
      assert result['replicas_identical'] and result['roundtrip_ok'], name
      assert result['eval_probs_error'] < 1e-5 and result['eval_passthrough_ok'], name


if __name__ == '__main__':
  if 'PNEUMOJAX_TEST_PROCESS' in os.environ:  # 'index,count,port': one of several processes.
    index, count, port = map(int, os.environ['PNEUMOJAX_TEST_PROCESS'].split(','))
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(f'localhost:{port}', num_processes=count, process_id=index)
  _run_worker()

