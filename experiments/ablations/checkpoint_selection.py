"""Ablation: checkpoint chosen on validation (val_pd) vs on the test set (Kermany et al.'s protocol), 5 seeds.

  pneumojax sweep experiments/ablations/checkpoint_selection.py --config.data.manual_dir=../shared/data/chest_xray

Each run of experiments/quickstart.py evaluates the test split at every validation (eval.report_test_selected):
its results.json holds both the headline `test` (chosen on val_pd) and `test_selected` (the evaluation with the
best test AUC, optimistic by construction); the tables show them side by side. The gap between the two is how
much choosing on the test set flatters a model. Shorter CPU check: add --config.train.num_epochs=2.
"""


def get_sweep():
  return {
      'config': 'experiments/quickstart.py',
      'grid': {},
      'overrides': {'eval.report_test_selected': True},
      'seeds': [0, 1, 2, 3, 4],
  }
