"""The ``astro-galsim`` command line."""
import argparse
import errno
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ['main']

_IMAGE_SUFFIXES = ('.fits', '.fit', '.fts', '.gz', '.fz', '.jpg', '.jpeg', '.png')
_TABLE_FORMATS = {'.ecsv': 'ascii.ecsv', '.csv': 'ascii.csv', '.vot': 'votable', '.xml': 'votable',
                  '.fits': 'fits'}
# query catalogues: table files that are never images (a .fits target is an image)
_CATALOGUE_FORMATS = {suffix: fmt for suffix, fmt in _TABLE_FORMATS.items() if suffix != '.fits'}


def _print_table(table, columns=('query_id', 'rank', 'id', 'distance', 'separation', 'r50', 'ellipticity')):
    if 'r50_arcsec' in table.colnames and np.isfinite(table['r50_arcsec']).any():   # sizes in arcsec where known
        columns = tuple('r50_arcsec' if c == 'r50' else c for c in columns)
    shown = table[[c for c in columns if c in table.colnames]]   # formats come with the result
    shown.pprint(max_lines=-1, max_width=-1)


def _write_table(table, path, overwrite=False):
    from .results import write_result
    path = _output_path(path, overwrite)
    write_result(table, path, overwrite=overwrite)
    print(f'wrote {path}')


def _output_path(path, overwrite=False):
    """The --output file, refused before any work if it cannot be written."""
    path = Path(path)
    if path.is_dir():
        raise SystemExit(f'astro-galsim: cannot write {path}: it is a directory; give a file name such '
                         f'as {path / "neighbours.ecsv"}')
    if path.suffix.lower() not in _TABLE_FORMATS:
        raise SystemExit(f'astro-galsim: cannot write {path}: use one of {", ".join(_TABLE_FORMATS)}')
    if path.exists() and not overwrite:   # as astropy's writers: never replace a file unasked
        raise FileExistsError(f'{path} exists; pass --overwrite to replace it, or give another --output')
    return path


def _parse_target(text):
    """A catalogue file (ECSV, CSV, VOTable) as a Table; other text is for SimilaritySearch.query."""
    path = Path(text)
    if path.is_file() and path.suffix.lower() in _CATALOGUE_FORMATS:
        from astropy.table import Table
        return Table.read(path, format=_CATALOGUE_FORMATS[path.suffix.lower()])
    return text


def _where(conditions):
    """--where texts such as 'r50_arcsec>3', 'ellipticity<=0.4' or 'n_stars=0' as a where dict."""
    import re
    where = {}
    for text in conditions:
        match = re.fullmatch(r'\s*(\w+)\s*(<=|>=|<|>|==|=)\s*([-+.\w]+)\s*', text)
        if match is None:
            raise ValueError(f'--where {text!r} is not COLUMN<VALUE, COLUMN>VALUE or COLUMN=VALUE '
                             "(e.g. --where 'ellipticity<0.4')")
        name, op, value = match.groups()
        number = float(value) if value.lstrip('+-').replace('.', '', 1).isdigit() else value
        if op not in ('=', '==') and isinstance(number, str):
            raise ValueError(f'--where {text!r}: {value!r} is not a number; {op} compares with a number '
                             "(e.g. --where 'r50_arcsec>3'); use = for text")
        low, high = where.get(name, (None, None)) if isinstance(where.get(name), tuple) else (None, None)
        where[name] = number if op in ('=', '==') else (number, high) if '>' in op else (low, number)
    return where


def cmd_demo(args):
    """Run the whole pipeline offline on the Hubble Deep Field bundled with scikit-image."""
    from astropy import units as u
    from astropy.coordinates import SkyCoord
    from .demo import hubble_deep_field_cutouts
    from .search import SimilaritySearch
    from .visualization import gallery, save_figure
    started = time.perf_counter()
    cutouts = hubble_deep_field_cutouts(n=args.n)
    print(f'Hubble Deep Field (scikit-image): {len(cutouts)} galaxy cutouts')
    # HST pixels are 0.04": the field's galaxies are resolved at fewer pixels than SDSS's; 8 px keeps
    # its stars out (their saturated cores say nothing in this stretch; HDF-16 has r50 7.2 px)
    search = SimilaritySearch(selection={'min_r50': 8 * u.pix})
    report = search.add(cutouts)
    print(f'added {int(report["accepted"].sum())} of {len(report)} galaxies to {search!r}')
    query_id = search.ids[0]
    result = search.query(query_id, k=args.k)
    print(f'\nThe {args.k} galaxies that look most like {query_id}:')
    _print_table(result)
    by_id = {c.meta['objid']: c for c in cutouts}
    fig = gallery(by_id[query_id], [by_id[i] for i in result['id']], ids=list(result['id']),
                  distances=np.asarray(result['distance']), query_label=query_id)
    save_figure(fig, args.output, dpi=100)
    print(f'wrote gallery {args.output}')

    demo = SimilaritySearch.load_demo()
    position = SkyCoord(180.4819, -1.0693, unit='deg')
    print(f'\nShipped demo database ({len(demo)} SDSS galaxies): neighbours of the galaxy at '
          f'{position.to_string("hmsdms")}')
    _print_table(demo.query(position, k=args.k))
    print(f'\ndone in {time.perf_counter() - started:.1f} s')


def cmd_query(args):
    from .search import SimilaritySearch
    if args.output:
        _output_path(args.output, args.overwrite)   # before the work, not after it
    search = SimilaritySearch.load(args.database) if args.database else SimilaritySearch.load_demo()
    target = _parse_target(args.target)
    where = _where(args.where) if args.where else None
    if where:  # limits in the units the columns are stored in
        where = {name: tuple(None if v is None else v * _unit_of(search.table, name) for v in cond)
                 if isinstance(cond, tuple) else cond for name, cond in where.items()}
    result = search.query(target, k=args.k, exclude_radius=args.exclude_radius, where=where,
                          on_error='skip', measurements=args.measurements)
    targets = result.meta['targets']
    failed = [(q, why) for q, status, why in zip(targets['query_id'], targets['status'], targets['reason'])
              if status != 'ok']
    for query_id, why in failed:
        print(f'astro-galsim query: skipped {query_id}: {why}', file=sys.stderr)
    if len(failed) == len(targets['status']):
        raise ValueError(f'no target could be described: {failed[0][1]}')
    if args.output:
        _write_table(result, args.output, overwrite=args.overwrite)
    else:
        _print_table(result)


def _unit_of(table, name):
    from astropy import units as u
    if name not in table.colnames:
        raise KeyError(f'--where: no column {name!r} to filter on; columns are {", ".join(table.colnames)}')
    return getattr(table[name], 'unit', None) or u.dimensionless_unscaled


def cmd_info(args):
    from astropy.io import fits
    from .search import SimilaritySearch
    from .utils._data import package_data
    path = Path(args.database) if args.database else package_data('demo_database.fits')
    search = SimilaritySearch.load(path)
    header = fits.getheader(path)
    # files written before the DATE card carry the date in their checksum's comment
    stamp = header.comments['CHECKSUM'].rpartition('updated ')[2] if 'CHECKSUM' in header else ''
    written = header.get('DATE') or stamp or 'at an unknown date,'
    print(repr(search))
    print(f'file: {path.name}, {path.stat().st_size / 1e6:.1f} MB, written {written.replace("T", " ")} UTC '
          f'by {header.get("CREATOR", "unknown software")}')
    for name, text in search.database.summary().items():
        print(f'{name}: {text}')


def cmd_build(args):
    from .build import build_database
    from .config import conf
    provenance = {}
    for item in args.provenance:
        key, sep, value = item.partition('=')
        if not sep:
            raise ValueError(f'--provenance {item!r} is not KEY=VALUE')
        provenance[key.strip()] = int(value) if value.strip().isdigit() else value.strip()
    executor, partition_size = args.executor, args.partition_size
    for old, new, value in (('--scheduler', '--executor', args.scheduler), ('--chunk-size', '--partition-size',
                                                                            args.chunk_size)):
        if value is not None:
            print(f'astro-galsim build: {old} is deprecated: use {new}', file=sys.stderr)
    executor = args.scheduler if args.scheduler is not None else executor
    partition_size = args.chunk_size if args.chunk_size is not None else partition_size
    if executor is not None:
        executor = int(executor) if executor.isdigit() else 'dask' if executor in ('dask', 'local') else executor
    with conf.set_temp('workers', args.workers):
        try:
            search, _ = build_database(args.source, args.output, partition_size=partition_size,
                                       resume=not args.restart, provenance=provenance, executor=executor)
        except KeyboardInterrupt:
            raise BuildInterrupted(_where_build_stopped(args, partition_size)) from None
    if len(search) == 0:   # an empty database is no success (offline, every download failed)
        raise ValueError(f'no galaxy was stored in {args.output} (the reasons are in {args.output}.rejected.ecsv); '
                         'downloads that failed for a reason that may pass (no network, a slow service) are '
                         'tried again when the same command is run again')


class BuildInterrupted(Exception):
    """Ctrl-C during ``astro-galsim build``: its message says what is saved and how to resume."""


def _where_build_stopped(args, partition_size):
    from astropy.io import fits
    output, shards = Path(args.output), Path(f'{args.output}.shards')
    try:
        saved = f'{fits.getval(output, "NGALAXY")} galaxies saved in {output}' if output.is_file() else \
            f'nothing saved in {output} yet'
    except Exception:  # noqa: BLE001 - a half-read header must not hide the message
        saved = f'{output} is being written'
    parts = len(list(shards.glob('*.parquet'))) if shards.is_dir() else 0
    executor = args.executor if args.scheduler is None else 'dask' if args.scheduler == 'local' else args.scheduler
    again = f'build {args.source} --output {output} --partition-size {partition_size}' + (
        f' --executor {executor}' if executor else '')   # the same partitions, without --restart
    return (f'interrupted: {saved}, {parts} finished partition(s) in {shards}; run '
            f'"astro-galsim {again}" again to resume where it stopped')


def cmd_train(args):
    from .pipeline import DEFAULT_NORMALISATION
    from .training import load_training_set, train_autoencoder
    arrays, labels, is_val, partners = load_training_set(
        args.data, DEFAULT_NORMALISATION, gz1=args.gz1, gz2_sample=args.gz2_sample, ngc_ic=args.ngc_ic,
        interacting=args.interacting, degraded=args.degraded, seed=args.seed, workers=args.workers)
    card = train_autoencoder(arrays, args.output, normalisation=dict(DEFAULT_NORMALISATION), is_val=is_val,
                             epochs=args.epochs, contrastive_weight=args.contrastive_weight, seed=args.seed,
                             training_data=str(args.data), labels=labels, label_weight=args.label_weight,
                             init=args.init, learning_rate=args.learning_rate,
                             labelled_per_step=args.labelled_per_step, partners=partners,
                             group_per_class=args.group_per_class, max_steps=args.max_steps)
    print(f'wrote {args.output} (best epoch {card["training"]["best_epoch"]}, '
          f'validation loss {card["metrics"]["best_val_loss"]:.4f})')


def cmd_evaluate(args):
    from astropy.table import Table
    from .evaluation import evaluate
    from .model import load_pretrained
    from .search import SimilaritySearch
    folder = Path(args.data)
    labels = Table.read(folder / 'labels.csv', format='ascii.csv')
    search = SimilaritySearch(encoder=load_pretrained(args.encoder))
    vectors = search.embed([folder / p for p in labels['path']])
    ok = np.isfinite(vectors).all(axis=1)
    result = evaluate(vectors[ok], np.asarray(labels[args.label_column])[ok], k=args.k)
    result.pprint(max_lines=-1, max_width=-1)


def _arcsec(text):
    from astropy import units as u
    return float(text) * u.arcsec


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults in the help, once, and only where there is one to show."""

    def _get_help_string(self, action):
        if action.default in (None, False, []) or '(default' in (action.help or ''):
            return action.help
        return super()._get_help_string(action)


def _parser():
    parser = argparse.ArgumentParser(
        prog='astro-galsim', description='Find galaxies that look like a given one.')
    version = sys.modules[__package__].__version__   # the package is imported before its cli module
    parser.add_argument('--version', action='version', version=f'%(prog)s {version}')
    sub = parser.add_subparsers(dest='command', required=True, metavar='COMMAND')
    # every command shows its defaults in --help
    _add = sub.add_parser
    sub.add_parser = lambda *a, **k: _add(*a, formatter_class=_DefaultsFormatter, **k)

    p = sub.add_parser('demo', help='run the whole pipeline offline on a real image and print neighbours',
                       description='Cut the galaxies out of the Hubble Deep Field image that scikit-image '
                       'ships, describe them with the pretrained encoder, print the neighbours of one, '
                       'write a gallery PNG, and query the shipped SDSS demo database.')
    p.add_argument('--output', default='astro_galsim_demo.png', help='gallery PNG to write')
    p.add_argument('--k', type=int, default=8, help='neighbours to show')
    p.add_argument('--n', type=int, default=60, help='galaxies to cut out of the field')
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser('query', help='neighbours of a galaxy given by position, name, id or image, or of a '
                       'catalogue of them',
                       description='Print (or write) the galaxies most like TARGET. For a catalogue, one row '
                       'per (target, neighbour) with its columns as query_<name>; targets that cannot be '
                       'described are reported and skipped.')
    p.add_argument('target', help='"RA Dec" (degrees or sexagesimal), an object name (needs the network), '
                   'an id in the database, an image file (FITS, JPEG, PNG), or a catalogue (ECSV, CSV, '
                   'VOTable) with ra/dec columns')
    p.add_argument('--database', help='database FITS file (default: the shipped demo database)')
    p.add_argument('--k', type=int, default=10, help='neighbours')
    p.add_argument('--exclude-radius', type=_arcsec, metavar='ARCSEC',
                   help='leave out galaxies within this angle of the target')
    p.add_argument('--where', action='append', default=[], metavar='CONDITION',
                   help="keep neighbours passing COLUMN<VALUE, COLUMN>VALUE or COLUMN=VALUE, in the column's "
                   "stored unit (repeatable), e.g. --where 'ellipticity<0.4'")
    p.add_argument('--output', help='write the table (the columns SimilaritySearch.query returns) to this file '
                   '(.ecsv, .csv, .vot, .fits; positions as ra/dec columns but in ECSV) instead of printing')
    p.add_argument('--overwrite', action='store_true', help='replace an existing --output file')
    p.add_argument('--measurements', action='store_true',
                   help='every stored measurement, not only the concise set (query(..., measurements=True))')
    p.set_defaults(func=cmd_query)

    p = sub.add_parser('build', help='build a database from a folder of images or a catalogue of positions',
                       description='Describe every galaxy of SOURCE and save the database to OUTPUT. '
                       'SOURCE is a folder of images (with an optional index.csv giving objid, ra, dec) '
                       'or a table file with ra/dec columns (positions are fetched from SDSS). '
                       'An interrupted build resumes where it stopped.')
    p.add_argument('source', help='folder of images, or a table file (ECSV, CSV, FITS, VOTable) with ra/dec')
    p.add_argument('--output', required=True, help='database FITS file')
    p.add_argument('--partition-size', type=int, default=500,
                   help='galaxies per partition: the unit of work, saved at once in OUTPUT.shards and reused '
                        'on a restart')
    p.add_argument('--restart', action='store_true', help='ignore a partial build and start again')
    p.add_argument('--workers', type=int, default=1, help='processes preparing the images (here)')
    p.add_argument('--executor', metavar='WHERE', default=None,
                   help="where the galaxies are described: a number of local processes, 'dask' for a local "
                        "Dask cluster of one worker process per core, or a Dask scheduler address "
                        "(tcp://host:8786; needs astro_galsim[dask]). Default: here, with --workers processes")
    p.add_argument('--chunk-size', type=int, default=None, help='deprecated: use --partition-size')
    p.add_argument('--scheduler', metavar='ADDRESS', default=None, help='deprecated: use --executor')
    p.add_argument('--provenance', action='append', default=[], metavar='KEY=VALUE',
                   help='stored in a new database, e.g. --provenance survey=SDSS --provenance data_release=14')
    p.set_defaults(func=cmd_build)

    p = sub.add_parser('train', help='train the autoencoder on a folder of galaxy images',
                       description='Train the encoder on DATA (a folder with index.csv: path, split, objid).')
    p.add_argument('data', help='folder of training images with index.csv (path, split, objid)')
    p.add_argument('--output', required=True, help='weights file (.pt); the model card goes beside it')
    p.add_argument('--epochs', type=int, default=32, help='most epochs (early stopping may end sooner)')
    p.add_argument('--contrastive-weight', type=float, default=1.0, help='weight of the NT-Xent term; 0 '
                   'trains a plain autoencoder')
    p.add_argument('--seed', type=int, default=0, help='seed of the split, weights and augmentations')
    p.add_argument('--workers', type=int, default=2, help='processes preparing the images')
    p.add_argument('--gz1', metavar='FOLDER', help='Galaxy Zoo 1 labelled folder (labels.csv, split.csv): its '
                   'train split joins the training with its classes; the test split is never read')
    p.add_argument('--gz2-sample', metavar='FOLDER', help='Galaxy Zoo 2 folder (labels.csv: path, label '
                   'spiral/non_spiral) whose images and labels join the training')
    p.add_argument('--label-weight', type=float, default=1.0, help='weight of the label terms')
    p.add_argument('--learning-rate', type=float, default=2e-3, help='peak learning rate of the one-cycle schedule')
    p.add_argument('--labelled-per-step', type=int, default=32,
                   help='labelled galaxies added to each batch, drawn evenly from the classes')
    p.add_argument('--init', metavar='WEIGHTS', help='start from these weights (same architecture)')
    p.add_argument('--ngc-ic', metavar='FOLDER', help='NGC/IC folder with Hubble types (index.csv: file, split, '
                   'hubble_coarse): its train split joins the training; the test split is never read')
    p.add_argument('--interacting', metavar='FOLDER', help='interacting galaxies in SDSS and HSC (index.csv: split, '
                   'sdss_file, hsc_file, label): the train split joins, each image paired with the other survey\'s')
    p.add_argument('--degraded', type=float, default=0.0, metavar='FRACTION',
                   help='fraction of the training sample and NGC/IC images paired with a physically degraded copy '
                        '(above 1: more copies, 2.0 gives two of each)')
    p.add_argument('--group-per-class', type=int, default=8,
                   help='galaxies of each class of each further label group (Hubble type, interaction) per step')
    p.add_argument('--max-steps', type=int, help='stop after this many steps')
    p.set_defaults(func=cmd_train)

    p = sub.add_parser('evaluate', help='retrieval quality on a labelled image folder',
                       description='Precision@k, mAP and kNN accuracy of the encoder on DATA '
                       '(a folder with labels.csv: path and a label column).')
    p.add_argument('data', help='folder with labels.csv (path and a label column) and the images')
    p.add_argument('--label-column', default='similarity_group', help='column of labels.csv to group by')
    p.add_argument('--k', type=int, default=10, help='neighbours per galaxy for precision@k and kNN')
    p.add_argument('--encoder', default=None, metavar='WEIGHTS', help='weights file (.pt, model card beside '
                   'it), e.g. one written by astro-galsim train (default: the shipped encoder)')
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser('info', help='what a database holds',
                       description='Print the number of galaxies, the encoder, the provenance and the '
                       'columns of a database.')
    p.add_argument('database', nargs='?', help='database FITS file (default: the shipped demo database)')
    p.set_defaults(func=cmd_info)
    return parser


def main(argv=None):
    """Entry point of the ``astro-galsim`` console script."""
    args = _parser().parse_args(argv)
    try:
        args.func(args)
    except BuildInterrupted as exc:
        print(f'\nastro-galsim {args.command}: {exc}', file=sys.stderr)
        return 130   # the shell's code for a command stopped by Ctrl-C
    except Exception as exc:
        if not isinstance(exc, _expected_errors()):
            raise  # a bug: the traceback is wanted
        message = str(exc.args[0] if isinstance(exc, KeyError) and exc.args else exc)
        if type(exc).__name__ == 'UnpicklingError':  # torch's own text advises unsafe loading
            message = ('the encoder weights were refused: the file holds Python objects besides '
                       'tensors, which are never loaded (nothing in it was run); give weights '
                       'written by astro-galsim train')
        if isinstance(exc, OSError) and exc.errno in _NO_SPACE and 'no space left' not in message:
            message = (f'no space left ({message}: the disk or the quota is full, or the file size limit of '
                       'ulimit -f was reached); the files written before are intact: free some space and run '
                       'the command again')
        print(f'astro-galsim {args.command}: error: {" ".join(message.split())}', file=sys.stderr)
        return 1
    return 0


_NO_SPACE = {errno.ENOSPC, errno.EFBIG, getattr(errno, 'EDQUOT', errno.ENOSPC)}


def _expected_errors():
    """Failures that come from the input, the files or the network: one line, not a traceback."""
    from pickle import UnpicklingError
    from .database import DatabaseError
    from .retrieval import RetrievalError
    from .scaleout import BuildIncomplete
    return (OSError, ValueError, KeyError, DatabaseError, RetrievalError, BuildIncomplete,
            UnpicklingError)


if __name__ == '__main__':  # pragma: no cover
    sys.exit(main())
