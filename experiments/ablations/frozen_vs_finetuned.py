"""Ablation: MobileNetV2-0.35 (ImageNet weights) frozen or fine-tuned; shortened for CPU: 128 px, 3 epochs (not 224, 10).

  python -m pneumojax.weights ../shared/weights/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5 \\
      --model mobilenet_v2 --kwarg alpha=0.35 --out pretrained/mobilenet_v2_035
  pneumojax sweep experiments/ablations/frozen_vs_finetuned.py --config.data.manual_dir=../shared/data/chest_xray

Base: experiments/kermany2018.py:mobilenet_v2,binary (3 channels, Adam 1e-3 cosine, batch 128), shortened to fit a
2-core CPU: 128 px instead of 224 and 3 epochs instead of 10 (fine-tuning at 224 px trained 14 images/s there while
another run shared the cores, about 5 minutes an epoch; at 128 px 60 images/s). 3 seeds, four modes:
- cached: Kermany et al.'s transfer learning, features computed once (no augmentation), softmax trained on them;
- frozen: the same frozen backbone (optim.backbone_lr_factor=0, BatchNorm statistics frozen) but run on every
  augmented batch;
- finetuned_0.1: the backbone learns at 0.1x the head's learning rate, BatchNorm statistics updated;
- finetuned: the whole network at the same learning rate.
The non-cached modes run the backbone forward (and, fine-tuned, backward) on every batch. On a GPU, the full
setting: add --config.data.resolution=224 --config.train.num_epochs=10 (and another --out). Shorter CPU check: add
--config.train.num_epochs=1.
"""

_FROZEN = {'train.cached_features': False, 'optim.backbone_lr_factor': 0.0, 'model.freeze_batch_norm': True}


def get_sweep():
  return {
      'config': 'experiments/kermany2018.py:mobilenet_v2,binary',
      'grid': {'mode': {
          'cached': {'train.cached_features': True},
          'frozen': _FROZEN,
          'finetuned_0.1': {**_FROZEN, 'optim.backbone_lr_factor': 0.1, 'model.freeze_batch_norm': False},
          'finetuned': {**_FROZEN, 'optim.backbone_lr_factor': 1.0, 'model.freeze_batch_norm': False},
      }},
      'overrides': {'data.resolution': 128, 'train.num_epochs': 3, 'data.augment': True,
                    'eval.report_test_selected': False, 'train.checkpoint_keep': 2},
      'seeds': [0, 1, 2],
  }
