"""A run's result files in its workdir (besides checkpoints/ and the event logs), written whole or not at all.

- results.json: the validation and test metrics of the best-on-validation checkpoint, the protocol, the config
  and the run's provenance (train/run.py);
- threshold.json: the operating point chosen on the validation outputs of a checkpoint, which `pneumojax
  predict` labels with (train/evaluator.py);
- test_history.json: the test metrics at every validation, with `eval.report_test_selected`
  (train/test_history.py).
"""

import json

from etils import epath

from pneumojax import atomic

RESULTS = 'results.json'
THRESHOLD = 'threshold.json'
TEST_HISTORY = 'test_history.json'


def save_results(workdir, results: dict) -> None:
  atomic.write_json(epath.Path(workdir) / RESULTS, results)


def save_threshold(workdir, point: dict) -> None:
  atomic.write_json(epath.Path(workdir) / THRESHOLD, point)


def load_threshold(workdir, step: int) -> dict:
  """The operating point stored for checkpoint `step`; an error if there is none, or it is another step's."""
  path = epath.Path(workdir) / THRESHOLD
  if not path.exists():
    raise FileNotFoundError(f'{path} is missing: run `pneumojax eval --workdir {workdir}` once, to choose the '
                            'threshold on the validation split.')
  point = json.loads(path.read_text())
  if point['checkpoint_step'] != step:
    raise ValueError(f'{path} holds the threshold of checkpoint step {point["checkpoint_step"]}, not of step '
                     f'{step}: run `pneumojax eval --workdir {workdir}` to choose it again.')
  return point
