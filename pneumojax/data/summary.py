"""The summary of a dataset that `pneumojax prepare` prints: counts, patients, cross-split patients, duplicates,
skips."""

import collections
import json

from etils import epath

from pneumojax.data import builder as builder_lib
from pneumojax.data import splits


def summarize(builder, data_config) -> dict:
  names = [s for s in splits.ALL if (s if s not in splits.PATIENT_DISJOINT else 'train') in builder.info.splits]
  meta = {s: splits.split_metadata(builder, s, data_config) for s in names}
  label_names = builder.info.features['label'].names
  subtype_names = builder.info.features['subtype'].names
  counts = {s: {f'{label_names[l]}/{subtype_names[t]}': int(n) for (l, t), n in sorted(
      collections.Counter(zip(m['label'].tolist(), m['subtype'].tolist())).items())} for s, m in meta.items()}
  official = [s for s in names if s in splits.OFFICIAL]
  patient_splits = collections.defaultdict(set)
  files_by_hash = collections.defaultdict(list)
  for s in official:
    for patient, name, digest in zip(meta[s]['patient_id'], meta[s]['filename'], meta[s]['sha256']):
      patient_splits[patient].add(s)
      files_by_hash[digest].append(name)
  skipped_path = epath.Path(builder.data_dir) / builder_lib.SKIPPED_FILES
  return {
      'dataset': builder.info.full_name,
      'data_dir': str(builder.data_dir),
      'counts': counts,
      'totals': {s: len(m['label']) for s, m in meta.items()},
      'patients': {s: len(set(m['patient_id'].tolist())) for s, m in meta.items()},
      'patients_in_several_splits': {p: sorted(s) for p, s in sorted(patient_splits.items()) if len(s) > 1},
      'identical_file_groups': sorted(sorted(f) for f in files_by_hash.values() if len(f) > 1),
      'skipped_files': json.loads(skipped_path.read_text()) if skipped_path.exists() else [],
      'val_pd': {'fraction': data_config.val_fraction, 'seed': data_config.val_seed},
  }


def format_summary(summary: dict) -> str:
  columns = sorted({k for c in summary['counts'].values() for k in c})
  lines = [f"{summary['dataset']} in {summary['data_dir']}", '',
           '| split | ' + ' | '.join(columns) + ' | total | patients |',
           '|---' * (len(columns) + 3) + '|']
  for split, counts in summary['counts'].items():
    cells = [str(counts.get(c, 0)) for c in columns]
    lines.append(f"| {split} | {' | '.join(cells)} | {summary['totals'][split]} | {summary['patients'][split]} |")
  vpd = summary['val_pd']
  lines += ['', f"val_pd/train_pd: {vpd['fraction']:.0%} of train patients (seed {vpd['seed']}), no shared patient.",
            f"Patient ids in more than one official split: {len(summary['patients_in_several_splits'])} "
            '(the original release may number patients per split, so a shared id need not be one child)']
  lines += [f'  {p}: {", ".join(s)}' for p, s in list(summary['patients_in_several_splits'].items())[:20]]
  if len(summary['patients_in_several_splits']) > 20:
    lines.append('  ... (all of them with --json)')
  groups = summary['identical_file_groups']
  lines.append(f'Groups of byte-identical files: {len(groups)} ({sum(map(len, groups))} files)')
  crossing = [g for g in groups if len({f.split("/")[0] for f in g}) > 1]
  lines.append(f'  of which span more than one split: {len(crossing)}')
  lines += [f'  {" = ".join(g)}' for g in crossing]
  lines.append(f"Skipped unreadable files: {len(summary['skipped_files'])}")
  lines += [f"  {s['file']}: {s['error']}" for s in summary['skipped_files']]
  return '\n'.join(lines)
