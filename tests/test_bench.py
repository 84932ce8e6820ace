"""`pneumojax bench` end to end on a tiny configuration: well-formed rows, consistent numbers, clear errors."""

import json

import jax
import pytest

from pneumojax import bench


def test_tiny_benchmark_emits_well_formed_rows(tmp_path, capsys):
  jsonl = tmp_path / 'rows.jsonl'
  bench.main(['--models', 'simple_cnn', '--sizes', '16', '--batch_sizes', '4', '--dtypes', 'float32', 'bfloat16',
              '--modes', 'jit', 'pmap', '--windows', '2', '--steps', '1', '--warmup', '0', '--jsonl', str(jsonl)])
  rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
  assert [(r['dtype'], r['mode']) for r in rows] == [
      ('float32', 'jit'), ('float32', 'pmap'), ('bfloat16', 'jit'), ('bfloat16', 'pmap')]
  for row in rows:
    assert (row['model'], row['size'], row['batch_size'], row['channels']) == ('simple_cnn', 16, 4, 1)
    assert row['compile_s'] > 0 and row['step_mib'] > 0 and row['params'] > 1000
    assert 0 < row['train_ips_min'] <= row['train_ips'] <= row['train_ips_max']
    assert 0 < row['eval_ips_min'] <= row['eval_ips'] <= row['eval_ips_max']
    # The backward pass costs about twice the forward one: a train step is 2-4x a forward pass.
    assert 2 * row['fwd_gflops'] < row['train_gflops'] < 4.5 * row['fwd_gflops']
    assert row['mfu'] == pytest.approx(row['train_gflops'] * row['train_ips'] / (row['peak_tflops'] * 1e3))
    assert 0 < row['mfu'] < 1
    assert row['backend'] == 'cpu' and row['devices'] == jax.device_count() and row['jax'] == jax.__version__
  # FLOPs do not depend on the parallel wrapper.
  assert rows[0]['train_gflops'] == rows[1]['train_gflops']

  table = capsys.readouterr().out.split('\n\n')[-1].strip().splitlines()
  assert table[0].startswith('| model | px | batch | dtype | mode |') and len(table) == 2 + len(rows)
  assert all(line.startswith('| simple_cnn | 16 | 4 |') for line in table[2:])


def test_forward_flops_match_a_hand_count():
  # Two 3x3 convolutions without BatchNorm (jain_model1) at 16 px, 1 channel: 2 FLOPs per multiply-add.
  row = bench.bench_step('jain_model1', 16, 2, 'float32', 'jit', windows=1, steps=1, warmup=0)
  conv1 = 14 * 14 * 9 * 1 * 32      # 'VALID' 3x3: 16 -> 14, then 2x2 pooling -> 7
  conv2 = 5 * 5 * 9 * 32 * 64       # 7 -> 5, pooling -> 2
  dense = 2 * 2 * 64 * 128 + 128 * 2
  assert row['fwd_gflops'] * 1e9 == pytest.approx(2 * (conv1 + conv2 + dense), rel=0.03)


def test_unknown_model_is_a_clear_error():
  with pytest.raises(SystemExit, match="resnet_9000"):
    bench.main(['--models', 'resnet_9000', '--windows', '1', '--steps', '1'])


def test_end_to_end_runs_the_config_on_both_data_paths(builder64, tfds_dir, tmp_path, capsys):
  jsonl = tmp_path / 'rows.jsonl'
  bench.main(['--end_to_end', 'experiments/quickstart.py', '--run_steps', '6', '--windows', '1', '--steps', '1',
              '--jsonl', str(jsonl), f'--config.data.data_dir={tfds_dir}',
              '--config.train.batch_size=32'])
  rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
  assert [r['data'] for r in rows] == ['on the devices', 'tf.data']
  for row in rows:
    assert (row['model'], row['size'], row['batch_size'], row['num_steps']) == ('simple_cnn', 64, 32, 6)
    assert 0 < row['run_ips_min'] <= row['run_ips'] <= row['run_ips_max'] and row['step_ips'] > 0
    assert row['of_step'] == pytest.approx(row['run_ips'] / row['step_ips']) and row['wall_s'] > 0
  assert '| simple_cnn | 64 | 32 |' in capsys.readouterr().out
