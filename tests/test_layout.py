"""The package's structure (README, Layout): folders are layers that import only downward, with no import circles,
and no machine-specific paths in library code."""

import ast
import configparser
import importlib.metadata
import re
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

pytestmark = pytest.mark.smoke

# Lowest first, by the first name under pneumojax/ ('' is pneumojax/__init__.py): a module may import from its own
# layer and the layers before it, at module level or inside a function.
LAYERS = (
    ('', 'config', 'atomic'),  # the default config and its parsing; atomic JSON writes
    ('data',),                 # the TFDS builder, splits, tasks, the tf.data pipeline
    ('models',),               # Flax models and their registry
    ('weights',),              # pretrained weight importers
    ('evaluation',),           # metrics, threshold, bootstrap, plots: arrays in, numbers out
    ('train',),                # steps, parallelism, checkpoints, the evaluator, the trainers
    ('trained',),              # what reads one trained run: load, evaluate, report, predict, explain, ood
    ('api',),                  # the Python API over one trained run, which the commands call too
    ('studies',),              # what spans many runs: sweeps, tables, reproduction
    ('bench',),
    ('cli',),
)
PACKAGE = REPO / 'pneumojax'


def _modules() -> dict[str, Path]:
  modules = {}
  for path in PACKAGE.rglob('*.py'):
    parts = path.relative_to(REPO).with_suffix('').parts
    modules['.'.join(parts[:-1] if parts[-1] == '__init__' else parts)] = path
  return modules


def _lazy_reexports(tree: ast.Module) -> set[int]:
  """The nodes inside a module-level `__getattr__` (PEP 562): the package's lazy re-export of its API, imported
  on first use of the attribute, after every module has loaded, so it neither climbs a layer nor closes a circle."""
  return {id(node) for function in tree.body if isinstance(function, ast.FunctionDef)
          and function.name == '__getattr__' for node in ast.walk(function)}


def _imports(modules) -> dict[str, set[str]]:
  """{module: the package's modules it imports}, `from package import module` resolved to the module; lazy
  re-exports of the package's `__getattr__` left out."""
  graph = {}
  for name, path in modules.items():
    targets = set()
    tree = ast.parse(path.read_text())
    lazy = _lazy_reexports(tree) if name == 'pneumojax' else set()
    for node in ast.walk(tree):
      if id(node) in lazy:
        continue
      if isinstance(node, ast.Import):
        targets |= {alias.name for alias in node.names}
      elif isinstance(node, ast.ImportFrom) and node.module:
        targets |= {f'{node.module}.{alias.name}' if f'{node.module}.{alias.name}' in modules else node.module
                    for alias in node.names}
    graph[name] = {target for target in targets if target in modules and target != name}
  return graph


def _layer(module: str) -> int:
  top = module.split('.')[1] if '.' in module else ''
  return next(i for i, names in enumerate(LAYERS) if top in names)


def test_every_module_is_in_a_layer():
  tops = {module.split('.')[1] if '.' in module else '' for module in _modules()}
  assert tops == {name for names in LAYERS for name in names}


def test_no_import_runs_up_a_layer():
  graph = _imports(_modules())
  upward = sorted(f'{a} -> {b}' for a, targets in graph.items() for b in targets if _layer(b) > _layer(a))
  assert not upward, upward


def test_there_are_no_import_circles():
  graph = _imports(_modules())
  done, path = set(), []

  def visit(module):
    if module in path:
      pytest.fail(f'import circle: {" -> ".join(path[path.index(module):] + [module])}')
    if module not in done:
      path.append(module)
      for target in sorted(graph[module]):
        visit(target)
      path.pop()
      done.add(module)

  for module in sorted(graph):
    visit(module)


def test_library_code_names_no_machine_paths():
  """Paths such as ../shared may appear in docstrings' examples, configs and tests, not as values in the library."""
  found = []
  for name, path in _modules().items():
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)) and node.body
                  and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    found += [f'{name}: {node.value!r}' for node in ast.walk(tree) if isinstance(node, ast.Constant)
              and isinstance(node.value, str) and 'shared/' in node.value and id(node) not in docstrings]
  assert not found, found


def _distribution(name: str) -> str:
  return re.sub(r'[-_.]+', '-', name).lower()


def _requirements(text: str) -> set[str]:
  return {_distribution(re.split(r'[<>=!\[;\s]', line)[0]) for line in text.splitlines()
          if line and not line.startswith('#')}


def _third_party_imports(tree: ast.Module) -> tuple[set[str], set[str]]:
  """(top-level names imported when the module loads, those imported only inside a function)."""
  deferred_nodes = {id(node) for function in ast.walk(tree) if isinstance(function, ast.FunctionDef)
                    for node in ast.walk(function) if node is not function}
  eager, deferred = set(), set()
  for node in ast.walk(tree):
    names = set()
    if isinstance(node, ast.Import):
      names = {alias.name.split('.')[0] for alias in node.names}
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      names = {node.module.split('.')[0]}
    (deferred if id(node) in deferred_nodes else eager).update(names - set(sys.stdlib_module_names) - {'pneumojax'})
  return eager, deferred


def test_every_third_party_import_is_declared_in_setup_cfg():
  """In install_requires; or, imported only inside the functions that need it, in an extra such as `cluster`."""
  setup = configparser.ConfigParser()
  setup.read(REPO / 'setup.cfg')
  required = _requirements(setup['options']['install_requires'])
  extras = set().union(*(_requirements(text) for name, text in setup['options.extras_require'].items()
                         if name != 'test'))
  providers = importlib.metadata.packages_distributions()

  def distributions(name):
    return {_distribution(d) for d in providers.get(name, [name])}

  undeclared = []
  for module, path in _modules().items():
    eager, deferred = _third_party_imports(ast.parse(path.read_text()))
    undeclared += [f'{module}: {name}' for name in sorted(eager) if not distributions(name) & required]
    undeclared += [f'{module}: {name} (in a function)' for name in sorted(deferred)
                   if not distributions(name) & (required | extras)]
  assert not undeclared, undeclared
