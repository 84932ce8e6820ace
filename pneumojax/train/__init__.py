"""Training: `train_and_evaluate(config, workdir)` checks the config, then runs the trainer it names.

Two sibling trainers over train/run.py (the model, state and final test they share): train/finetune.py (the step
loop) and train/linear_probe.py (`train.cached_features`: a head on a frozen backbone's cached features). Under
them: state.py, step.py (pure per-device steps), parallel.py (jit+shard_map / pmap), optim.py, checkpoint.py
(Orbax), evaluator.py (every evaluation), files.py (result files), preflight.py, preemption.py, distributed.py.
"""

import time


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains (or resumes) the run of `config` in `workdir`; returns its results (results.json's content)."""
  # Imported here, so that `pneumojax.train.step` and the other building blocks stay light to import (the
  # benchmark runs without TensorFlow).
  from pneumojax.train import distributed, finetune, linear_probe, preflight
  started = time.perf_counter()  # results.json's wall time: everything this call does, compilation included.
  distributed.initialize(config)  # First: nothing may start JAX's backends before it.
  preflight.check(config, workdir)
  trainer = linear_probe if config.train.cached_features else finetune
  return trainer.train_and_evaluate(config, workdir, started)
