"""Cold start: what a user waits for when one command asks one question.

Each measurement is a fresh Python process, as the command line is used:

* ``astro-galsim query IMAGE`` against the demo database (the image is prepared and
  described by the encoder, which needs torch);
* ``astro-galsim query "RA DEC"`` of a galaxy stored in the demo database (its stored
  vector is used: no image, no encoder, no torch).

For each, the whole command is run ``--repeat`` times (median wall-clock seconds and median
CPU seconds, user + system, of the process: on a shared machine the CPU seconds say more
than the wall clock), then the same work is repeated in a timed child that prints where the
time goes: imports, loading the database, loading the encoder (the weights and a first
forward pass; image queries only) and the query itself.

Usage::

    python benchmarks/coldstart.py                   # a GZ1 image and a stored position, 5 runs each
    python benchmarks/coldstart.py --image PATH --position "180.481875 -1.06925" --repeat 5
    python benchmarks/coldstart.py --precision float32   # the image described in numpy, no torch
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..')
DEFAULT_IMAGE = os.path.join(ROOT, '..', 'shared', 'data', 'sdss_gz1_eggochi', 'images', '587722952767439450.jpg')
DEFAULT_POSITION = '180.481875 -1.06925'   # a galaxy of the demo database


def child(kind, target, precision):
    """Time the steps of one query in this (fresh) process and print them as JSON."""
    times = {}
    t0 = time.perf_counter()
    from astro_galsim.search import SimilaritySearch
    times['import_s'] = time.perf_counter() - t0
    if precision:
        from astro_galsim.config import conf
        conf.encoder_precision = precision
    t0 = time.perf_counter()
    search = SimilaritySearch.load_demo()
    times['load_s'] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if kind == 'image':
        from astro_galsim.model import query_arithmetic
        with query_arithmetic():   # as SimilaritySearch describes query images
            search.encoder.encode(_tiny_image(search.encoder.input_shape))   # the weights, a first forward pass
    times['encoder_s'] = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = search.query(target, k=10)
    times['query_s'] = time.perf_counter() - t0
    times['modules'] = sorted(m for m in ('torch', 'photutils', 'dask', 'matplotlib', 'sklearn', 'pynndescent',
                                          'skimage', 'reproject', 'astroquery') if m in sys.modules)
    assert len(result) == 10
    print(json.dumps(times))


def _tiny_image(shape):
    """A prepared input, to load the encoder apart from the query (the query describes its image again)."""
    import numpy as np
    return np.zeros((1,) + tuple(shape), dtype=np.float32)


def run(command):
    """Wall-clock and CPU seconds of a command run to completion in a fresh process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=_env())
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        raise RuntimeError(f'{command} failed:\n{done.stderr[-2000:]}')
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done.stdout


def _env():
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join([os.path.abspath(ROOT)] + [p for p in [env.get('PYTHONPATH')] if p])
    return env


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--image', default=DEFAULT_IMAGE)
    parser.add_argument('--position', default=DEFAULT_POSITION)
    parser.add_argument('--repeat', type=int, default=5)
    parser.add_argument('--precision', choices=('auto', 'float32', 'bfloat16'),
                        help="conf.encoder_precision for the queries (default: the configured one); "
                             "'float32' describes a query image in numpy, without torch")
    parser.add_argument('--child', nargs=2, metavar=('KIND', 'TARGET'), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(*args.child, args.precision)
    if not os.path.isfile(args.image):
        raise SystemExit(f'no image at {args.image}; give one with --image')
    print(f'encoder precision: {args.precision or "as configured"}; '
          f'cpus: {os.cpu_count()}, load average before: {" ".join(f"{v:.2f}" for v in os.getloadavg())}')
    rows = []
    for kind, target in (('image', args.image), ('position', args.position)):
        command = [sys.executable, '-m', 'astro_galsim.cli', 'query', target]
        timed = [sys.executable, os.path.abspath(__file__), '--child', kind, target]
        if args.precision:
            command[1:3] = ['-c', 'import sys; from astro_galsim.config import conf; '
                            f'conf.encoder_precision = {args.precision!r}; '
                            'from astro_galsim.cli import main; main(sys.argv[1:])']
            timed += ['--precision', args.precision]
        whole = [run(command)[:2] for _ in range(args.repeat)]
        steps = [json.loads(run(timed)[2].strip().splitlines()[-1]) for _ in range(args.repeat)]
        rows.append((kind, whole, steps))
    print(f'load average after: {" ".join(f"{v:.2f}" for v in os.getloadavg())}\n')
    print(f'Fresh-process queries against the demo database, median of {args.repeat} '
          '(whole command; then its steps in a timed child)')
    print(f"{'query':>9} {'wall s':>7} {'CPU s':>6} | {'import s':>8} {'load s':>7} {'encoder s':>9} "
          f"{'query s':>7}  modules imported")
    for kind, whole, steps in rows:
        med = {key: statistics.median(s[key] for s in steps)
               for key in ('import_s', 'load_s', 'encoder_s', 'query_s')}
        print(f"{kind:>9} {statistics.median(w for w, _ in whole):>7.2f} "
              f"{statistics.median(c for _, c in whole):>6.2f} | {med['import_s']:>8.2f} "
              f"{med['load_s']:>7.2f} {med['encoder_s']:>9.2f} {med['query_s']:>7.2f}  "
              f"{', '.join(steps[-1]['modules']) or '-'}")
    print('import: astro_galsim.search; encoder: reading the weights and a first forward pass (image '
          'queries; in numpy for up to 4 query images unless bfloat16 is asked for, torch is not imported); '
          'query: SimilaritySearch.query '
          '(the image read, prepared and described).')


if __name__ == '__main__':
    main()
