"""`meddiff study`: a two-alternative forced-choice (2AFC) reader study, real vs generated.

    meddiff study create STUDY --real DIR --method NAME=DIR [--method NAME=DIR ...]
                         [--pairs N|all] [--seed S] [--pairing matched|random] [--axis A]
                         [--window auto|dicom|LO:HI|MODALITY=LO:HI ...] [--percentiles LO HI]
                         [--readers N | --reader-codes C1,C2,...] [--feedback end|none|each]
                         [--confidence K] [--order per-reader|same] [--product TAG]
    meddiff study serve STUDY [--host 127.0.0.1] [--port 8000]
    meddiff study results STUDY [--out DIR]
    meddiff study readers STUDY [--add N | --add-codes C1,C2,...]

`create` writes the study folder (PNG pairs, study.json manifest, study.sqlite) and prints each
reader's secret code; `serve` runs the web app readers open in a browser; `results` prints
accuracy per method and reader with exact 95% intervals and binomial tests against 50%, and
inter-reader kappa, and writes CSV files and report.html to STUDY/results (or --out).
STUDY may also be given by the flag of every verb: `create -o STUDY` (the folder written),
`serve|results|readers -i STUDY` (the folder read); both forms together must name the same folder.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InputError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("study", help="2AFC reader study: create, serve to readers, analyse",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ss = p.add_subparsers(dest="study_verb", metavar="ACTION")
    ss.required = True

    c = ss.add_parser("create", help="build a study folder from real and generated images")
    add_study_folder(c, "new study folder", output=True)
    c.add_argument("--real", required=True, type=Path, help="folder of real images")
    c.add_argument("--method", required=True, action="append", metavar="NAME=DIR",
                   help="a method's generated images (a folder, or a `meddiff sample` output folder); repeat per method")
    c.add_argument("--pairs", default="20", help="pairs per method, or 'all' (default 20)")
    c.add_argument("--seed", type=int, default=0, help="seed of every random choice (default 0)")
    c.add_argument("--pairing", choices=["matched", "random"], default="matched",
                   help="matched: generated image vs the real image of the same name and slice (default); random: independent draws")
    c.add_argument("--axis", type=int, default=0, help="slice axis of 3D volumes ([Z,Y,X] order, default 0)")
    c.add_argument("--window", action="append", default=None, metavar="SPEC",
                   help="display window from the real image: auto (percentiles, default), dicom, LO:HI, or MODALITY=LO:HI (repeatable)")
    c.add_argument("--clip-percentiles", "--percentiles", dest="percentiles", type=float, nargs=2, default=(0.5, 99.5),
                   metavar=("LO", "HI"), help="percentiles of the auto window (default 0.5 99.5; --percentiles is the old spelling)")
    c.add_argument("--min-foreground", type=float, default=0.1,
                   help="skip slices with less than this fraction of pixels above 5%% of their range (default 0.1)")
    c.add_argument("--product", default=None, help="generated product tag to use when a run folder has several (restored, mean, sample0, ...)")
    c.add_argument("--readers", type=int, default=4, help="number of readers to create with random codes (default 4)")
    c.add_argument("--reader-codes", default=None, help="comma-separated reader codes instead of random ones")
    c.add_argument("--feedback", choices=["end", "none", "each"], default="end",
                   help="end: score shown after the last pair (default); none: never; each: correct side after every answer")
    c.add_argument("--confidence", type=int, default=0, help="confidence levels asked with every answer (0 = none, else 2-10)")
    c.add_argument("--order", choices=["per-reader", "same"], default="per-reader",
                   help="presentation order: a different random order per reader (default) or one for all")
    c.set_defaults(func=run_create)

    s = ss.add_parser("serve", help="run the reader web app")
    add_study_folder(s, "study folder written by `meddiff study create`")
    s.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=int, default=8000, help="TCP port to listen on (default 8000; 0 = any free port)")
    s.set_defaults(func=run_serve)

    r = ss.add_parser("results", help="accuracy, exact intervals, binomial tests, kappa; CSV and HTML report")
    add_study_folder(r, "study folder written by `meddiff study create`")
    r.add_argument("-o", "--output", "--out", dest="out", type=Path, default=None, help="output folder (default STUDY/results)")
    r.set_defaults(func=run_results)

    a = ss.add_parser("readers", help="list readers and their codes, or add readers")
    add_study_folder(a, "study folder written by `meddiff study create`")
    g = a.add_mutually_exclusive_group()
    g.add_argument("--add", type=int, default=0, help="add N readers with random codes")
    g.add_argument("--add-codes", default=None, help="add readers with these comma-separated codes")
    a.set_defaults(func=run_readers)


def add_study_folder(p: argparse.ArgumentParser, what: str, *, output: bool = False) -> None:
    """The study folder as the positional STUDY or, by the convention of every verb, as -o/--output (create:
    the folder written) or -i/--input (serve, results, readers: the folder read); study_folder(args) reads it."""
    p.add_argument("study", type=Path, nargs="?", default=None, metavar="STUDY", help=f"{what} (or {_FLAGS[output]} STUDY)")
    p.add_argument(*_FLAGS[output].split("/"), *(("--out",) if output else ()), dest="study_flag", type=Path, default=None,
                   help=f"{what}: the same as the positional STUDY")
    p.set_defaults(study_flag_name=_FLAGS[output])


_FLAGS = {True: "-o/--output", False: "-i/--input"}


def study_folder(args: argparse.Namespace) -> Path:
    """The study folder given as STUDY or as its flag; InputError when neither is given, or both disagree."""
    flag, positional, named = args.study_flag_name, args.study, args.study_flag
    if positional is None and named is None:
        raise InputError(f"the study folder is required: give STUDY or {flag} STUDY")
    if positional is not None and named is not None and positional.resolve() != named.resolve():
        raise InputError(f"two study folders: STUDY {positional} and {flag} {named}; give one (or the same folder twice)")
    return positional if positional is not None else named


def _codes(text: str | None) -> list[str] | None:
    return None if text is None else [c for c in (x.strip() for x in text.split(",")) if c]


def run_create(args: argparse.Namespace) -> int:
    from ..study.create import create_study

    methods: dict[str, Path] = {}
    for spec in args.method:
        name, sep, folder = spec.partition("=")
        if not sep or not name or not folder:
            raise InputError(f"--method {spec!r}: expected NAME=FOLDER")
        if name in methods:
            raise InputError(f"--method {name!r} given twice")
        methods[name] = Path(folder)
    if args.readers < 1 and not args.reader_codes:
        raise InputError(f"--readers {args.readers}: expected at least 1 reader (or --reader-codes)")
    if args.confidence != 0 and not 2 <= args.confidence <= 10:
        raise InputError(f"--confidence {args.confidence}: expected 0 (not asked) or 2-10 levels")
    if args.pairs == "all":
        pairs = None
    else:
        try:
            pairs = int(args.pairs)
        except ValueError:
            raise InputError(f"--pairs {args.pairs!r}: expected a whole number or 'all'") from None
    out, readers = create_study(study_folder(args), args.real, methods, pairs=pairs, seed=args.seed, pairing=args.pairing, axis=args.axis,
                                window=args.window, percentiles=tuple(args.percentiles), min_foreground=args.min_foreground,
                                product=args.product, readers=args.readers, reader_codes=_codes(args.reader_codes),
                                feedback=args.feedback, confidence=args.confidence, order=args.order)
    from ..study.db import open_study_db

    conn = open_study_db(out)
    n_pairs = conn.execute("SELECT COUNT(*) FROM pairs").fetchone()[0]
    conn.close()
    print(f"study {out}: {n_pairs} pairs ({', '.join(methods)}), seed {args.seed}")
    print("reader codes (give each reader theirs; `meddiff study readers` lists them again):")
    for label, code in readers:
        print(f"  {label}: {code}")
    return 0


def run_serve(args: argparse.Namespace) -> int:
    from ..study.server import serve

    serve(study_folder(args), args.host, args.port, quiet=not getattr(args, "verbose", False))
    return 0


def run_results(args: argparse.Namespace) -> int:
    from ..study.results import write_results

    res = write_results(study_folder(args), args.out)
    print(res["text"])
    print(f"wrote answers.csv, accuracy.csv, agreement.csv, results.json, report.html to {res['out']}")
    return 0


def run_readers(args: argparse.Namespace) -> int:
    from ..study import db

    conn = db.open_study_db(study_folder(args))
    try:
        if args.add or args.add_codes:
            for label, code in db.add_readers(conn, n=args.add, codes=_codes(args.add_codes)):
                print(f"added {label}: {code}")
        rows = conn.execute("SELECT r.label, r.code, (SELECT COUNT(*) FROM answers a WHERE a.reader_id = r.reader_id) AS done, "
                            "(SELECT COUNT(*) FROM schedule s WHERE s.reader_id = r.reader_id) AS total "
                            "FROM readers r ORDER BY r.reader_id").fetchall()
    finally:
        conn.close()
    for r in rows:
        print(f"{r['label']}: {r['code']}  ({r['done']}/{r['total']} answered)")
    return 0
