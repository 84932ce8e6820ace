"""Where and how a run was made, recorded in its results.json."""

import json

import pytest

from pneumojax.train import files, provenance
from tests.helpers import REPO


def test_results_record_wall_time_hardware_versions_and_commit(swept):
  _, out, runs, _, _ = swept
  run = json.loads((out / runs[0].name / files.RESULTS).read_text())['run']
  assert run['wall_time_s'] > 0
  assert run['hardware']['backend'] == 'cpu' and run['hardware']['device_count'] >= 1
  assert run['hardware']['cpu_count'] >= 1 and run['hardware']['platform']
  assert run['versions']['jax'] and run['versions']['flax']
  if (REPO / '.git').exists():
    assert len(run['git']['commit']) == 40


@pytest.mark.parametrize('argv, expected', [
    (['/x/pneumojax/cli.py', 'train', '--workdir', 'w'], 'pneumojax train --workdir w'),  # python -m pneumojax.cli
    (['/venv/bin/pneumojax', 'train'], 'pneumojax train'),
    (['experiments/sweep.py', '--seeds', '0'], 'sweep.py --seeds 0')])
def test_recorded_command_is_the_command_as_typed(monkeypatch, argv, expected):
  monkeypatch.setattr(provenance.sys, 'argv', argv)
  assert provenance.command_line() == expected
