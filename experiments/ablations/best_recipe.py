"""Ablation: what each part of the best recipe is worth (multi-depth features, cached augmented views), 3 seeds.

  pneumojax sweep experiments/ablations/best_recipe.py --config.data.manual_dir=../shared/data/chest_xray

Base: experiments/best.py (convert its weights first: see there). Settings: the recipe; without the augmented views;
without the middle blocks (conv_head's 1,280 features alone, as Kermany et al.'s probe). The L2 strength follows
the number of train rows as in the recipe (C = 0.3). Run after the recipe was fixed on val_pd
(experiments/best/SEARCH.md): these test numbers chose nothing. The recipe's three runs are those of
experiments/results/best/seed{0,1,2}, copied here (the sweep checked that their config is this one's; their
results.json keeps the command that trained them).
"""

_ROWS = 4607  # train_pd images


def get_sweep():
  return {
      'config': 'experiments/best.py',
      'grid': {'part': {
          'recipe': {},
          'no_views': {'train.cached_views': 0, 'optim.weight_decay': 2 / (0.3 * _ROWS)},
          'last_layer_only': {'train.cached_views': 0, 'optim.weight_decay': 2 / (0.3 * _ROWS),
                              'model.kwargs.feature_blocks': (16,)},
      }},
      'seeds': [0, 1, 2],
  }
