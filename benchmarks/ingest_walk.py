"""How far a door walks through the package: the modules it enters and the calls that climb back up.

A serial ``build_database`` of a small folder of real JPEGs (``--door build``), or
``SimilaritySearch.add`` of the same images (``--door add``), runs under a profiler hook that
records every call from one module of the package into another. Modules are ranked by the
package's static layering (the imports at the top of each module: a module ranks above
every module it imports), and a call into a module of higher rank than the caller's is a
climb back up (a stage calling a front, or a lower stage calling back into a higher one
through a lazy import or a callback).

Printed: the modules entered (rooms), the distinct caller -> callee module pairs, and those
pairs that climb, each named.

Usage::

    python benchmarks/ingest_walk.py
    python benchmarks/ingest_walk.py --door add
"""
import argparse
import ast
import sys
import tempfile
from functools import lru_cache
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / 'astro_galsim'
DATA = Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'sdss_galaxies_mikeedi'


def module_name(path):
    parts = list(path.relative_to(PACKAGE.parent).with_suffix('').parts)
    if parts[-1] == '__init__':
        parts = parts[:-1]
    return '.'.join(parts)


def top_level_imports():
    """Module -> modules of the package it imports at its top level."""
    graph = {}
    for path in PACKAGE.rglob('*.py'):
        name = module_name(path)
        package = name if path.name == '__init__.py' else name.rpartition('.')[0]
        targets = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package.split('.')
                base = base[:len(base) - (node.level - 1)]
                module = '.'.join(base + ([node.module] if node.module else []))
                targets.add(module)
                for alias in node.names:   # ``from . import partitions``
                    targets.add(f'{module}.{alias.name}')
        graph[name] = {t for t in targets if t != name}
    return graph


def ranks(graph):
    @lru_cache(maxsize=None)
    def rank(name):
        below = [rank(t) for t in graph.get(name, ()) if t in graph]
        return 1 + max(below, default=0)
    return {name: rank(name) for name in graph}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--door', choices=['build', 'add'], default='build')
    door = parser.parse_args(argv).door
    graph = top_level_imports()
    rank = ranks(graph)
    pairs = set()

    def profile(frame, event, arg):
        if event != 'call':
            return
        callee = frame.f_globals.get('__name__', '')
        caller_frame = frame.f_back
        caller = caller_frame.f_globals.get('__name__', '') if caller_frame is not None else ''
        if callee in rank and caller in rank and callee != caller:
            pairs.add((caller, callee))

    from astropy.table import Table
    from astro_galsim import conf
    from astro_galsim import SimilaritySearch
    from astro_galsim.build import build_database
    index = Table.read(DATA / 'index.csv', format='ascii.csv')[:3]
    with tempfile.TemporaryDirectory() as tmp, conf.set_temp('show_progress', False):
        folder = Path(tmp) / 'images'
        folder.mkdir()
        Table({'path': [str(DATA / p) for p in index['path']], 'objid': index['objid'], 'ra': index['ra'],
               'dec': index['dec']}).write(folder / 'index.csv', format='ascii.csv')
        build_database(folder, Path(tmp) / 'warm.fits')        # imports and caches, not counted
        SimilaritySearch().add([DATA / p for p in index['path']])
        search = SimilaritySearch()
        sys.setprofile(profile)
        try:
            if door == 'build':
                build_database(folder, Path(tmp) / 'db.fits')
            else:
                search.add([DATA / p for p in index['path']], ids=[str(i) for i in index['objid']])
        finally:
            sys.setprofile(None)
    rooms = sorted({m for pair in pairs for m in pair})
    climbs = sorted((a, b) for a, b in pairs if rank[b] > rank[a])
    print(f'{len(rooms)} modules entered: {", ".join(m.removeprefix("astro_galsim.") for m in rooms)}')
    print(f'{len(pairs)} caller -> callee module pairs; {len(climbs)} climb back up:')
    for a, b in climbs:
        print(f'  {a.removeprefix("astro_galsim.")} (rank {rank[a]}) -> {b.removeprefix("astro_galsim.")} '
              f'(rank {rank[b]})')


if __name__ == '__main__':
    main()
