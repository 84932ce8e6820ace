"""Imports a pretrained backbone into an Orbax checkpoint for `--config.model.init_from`.

  python -m pneumojax.weights ../shared/weights/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5 \
      --model mobilenet_v2 --kwarg alpha=0.35 --out pretrained/mobilenet_v2_035

The classifier of the file, if any, is left out: a run's head is always freshly initialised.
"""

import argparse
import ast
import logging

from pneumojax import models, weights


def _kwarg(text: str):
  key, value = text.split('=', 1)
  return key, ast.literal_eval(value)


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('file', help='.h5 (Keras applications), .npz or .pth (PyTorch state_dict)')
  parser.add_argument('--model', required=True, choices=models.list_models())
  parser.add_argument('--kwarg', type=_kwarg, action='append', default=[],
                      help="a model field as key=python literal, e.g. alpha=0.35 or variant='keras'")
  parser.add_argument('--out', required=True, help='new directory of the Orbax checkpoint')
  args = parser.parse_args()
  logging.basicConfig(level=logging.INFO)
  model = models.get_model(args.model, features_only=True, **dict(args.kwarg))
  variables = weights.load(args.file, model)
  weights.save(args.out, variables)
  print(f'Saved the {args.model} backbone of {args.file} to {args.out}.')


if __name__ == '__main__':
  main()
