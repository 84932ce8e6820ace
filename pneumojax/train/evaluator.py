"""The one evaluator: the eval step over batches -> outputs -> metrics, and the threshold chosen on validation.

Every evaluation goes through it: the validations during training (train/finetune.py; train/linear_probe.py on
cached features), the final test of a run (train/run.py) and `pneumojax eval` (trained/evaluate.py). The caller
supplies the data: this process's numpy batches (dicts `image`, `label`, `mask`, the last one padded and masked: a
tf.data eval dataset's, or cached features'), or a split already on the devices (`parallel.DeviceSplit`); every real
example counts once.
"""

from pneumojax.evaluation import metrics, threshold
from pneumojax.train import parallel


def outputs(dp, state, data) -> metrics.EvalMetrics:
  """The outputs of `state` (replicated by `dp`, a parallel.DataParallel) on `data` (batches or a DeviceSplit),
  collected on the host: `.compute(threshold)` gives the metrics, `.outputs.compute()` the probabilities and labels."""
  if isinstance(data, parallel.DeviceSplit):
    per_dispatch = [dp.eval_split(state, data)]
  else:
    per_dispatch = (dp.eval_step(state, dp.shard(batch)) for batch in data)
  collection = metrics.EvalMetrics.empty()
  for outputs_of_dispatch in per_dispatch:
    collection = collection.merge(metrics.EvalMetrics.single_from_model_output(**outputs_of_dispatch))
  return collection


def evaluate(config, dp, state, step: int, batches: dict) -> tuple[dict[str, metrics.EvalMetrics], dict | None]:
  """({split: outputs} of the checkpoint of `step` on each split of `batches` {split: data}, and the operating
  point chosen on the outputs of `config.data.val_split`, which `batches` must hold; None for more than two
  classes).

  The threshold is chosen here, on the validation outputs only (`config.eval`'s rule, evaluation/threshold.py);
  the other splits choose nothing.
  """
  collected = {split: outputs(dp, state, split_batches) for split, split_batches in batches.items()}
  val = config.data.val_split
  return collected, threshold.operating_point(collected[val].outputs.compute(), config.eval, val, step)
