"""Measure how many bytes a serial build writes for catalogues of several sizes.

A build should write bytes in proportion to its catalogue: each partition's shard once, and
the database once. The per-galaxy path is not what is measured here, so the pipeline is
replaced by a stand-in that repeats the real measurements of a few galaxies (same columns,
units and vector size); everything else (partitions, shards, database file) is the real
build. Bytes are this process's written bytes (``wchar`` of ``/proc/self/io``), so the
count covers every file the build wrote.

Usage::

    python benchmarks/build_bytes.py                      # 500 and 2,000 galaxies, partitions of 100
    python benchmarks/build_bytes.py --sizes 500 2000 --partition-size 100
"""
import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from astropy.table import Table, vstack

DATA = Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'sdss_galaxies_mikeedi'


def written_bytes():
    for line in Path('/proc/self/io').read_text().splitlines():
        if line.startswith('wchar:'):
            return int(line.split()[1])
    raise RuntimeError('no wchar in /proc/self/io')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--sizes', type=int, nargs='+', default=[500, 2000])
    parser.add_argument('--partition-size', type=int, default=100)
    args = parser.parse_args(argv)
    import astro_galsim.pipeline as pipeline
    from astro_galsim import conf
    from astro_galsim.build import build_database
    from astro_galsim.model import load_pretrained

    index = Table.read(DATA / 'index.csv', format='ascii.csv')
    encoder = load_pretrained()
    sample = [DATA / p for p in index['path'][:8]]
    real_vectors, real_table = pipeline.describe(sample, encoder)

    def stand_in(images, encoder, targets=None, **kwargs):
        rows = np.arange(len(images)) % len(sample)
        table = vstack([real_table[i:i + 1] for i in rows]) if len(rows) else real_table[:0]
        return real_vectors[rows].copy(), table

    pipeline.describe = stand_in
    print(f'load average {os.getloadavg()[0]:.2f}; partitions of {args.partition_size}')
    with conf.set_temp('show_progress', False), tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            folder = Path(tmp) / f'n{n}'
            folder.mkdir()
            rows = index[:n]
            Table({'path': [str(DATA / p) for p in rows['path']], 'objid': rows['objid'], 'ra': rows['ra'],
                   'dec': rows['dec']}).write(folder / 'index.csv', format='ascii.csv')
            before = written_bytes()
            build_database(folder, folder / 'db.fits', partition_size=args.partition_size)
            total = written_bytes() - before
            size = (folder / 'db.fits').stat().st_size
            print(f'{n:6d} galaxies: {total / 1e6:9.2f} MB written, {total / n / 1e3:7.2f} kB per galaxy '
                  f'(database file {size / 1e6:.2f} MB)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
