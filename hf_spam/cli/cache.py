"""See and prune the prefix cache that training leaves on disk (as `hf cache ls` / `hf cache rm` do for the Hub's).

examples:
  hf-spam cache list                                  # every key: size, examples, model, depth, data, split, dtype, dates
  hf-spam cache list --json
  hf-spam cache prune --older_than 7d --dry_run       # what would go
  hf-spam cache prune --max_size 20GB --keep 3        # least recently used first; keys in use are skipped

Both take --prefix_cache_dir (default: hf_spam_prefix_cache/ under the datasets cache, as training).
"""

from __future__ import annotations

import argparse
import json

from ..cache.management import PruneResult, format_size, format_time, list_caches, parse_age, parse_size, prune_caches
from ..cache.store import default_cache_dir
from .common import Parser, log_warnings, report_errors

COLUMNS = ("key", "size", "examples", "model", "depth", "data", "split", "dtype", "created", "last used", "status")


def parser() -> Parser:
    parser = Parser("cache", __doc__)
    parser.add_argument("command", choices=["list", "prune"])
    parser.add_option("--prefix_cache_dir", default=None, help=f"the cache folder (default: {default_cache_dir()})")
    parser.add_option("--json", action="store_true", help="list: one JSON document instead of the table")
    parser.add_option("--older_than", help="prune: keys last used longer ago than this (7d, 12h, 30m)")
    parser.add_option("--max_size", help="prune: then least recently used keys until the rest fits (20GB, 500MB)")
    parser.add_option("--keep", type=int, help="prune: at most this many keys, the most recently used")
    parser.add_option("--dry_run", action="store_true", help="prune: print what would be removed, remove nothing")
    return parser


def table(entries) -> str:
    rows = [COLUMNS]
    for e in entries:
        data = e.data if e.data is None or len(e.data) <= 40 else e.data[:39] + "…"  # --json has it whole, and the full key
        cells = (e.folder.name[:12], format_size(e.bytes), e.examples, e.model, e.depth, data, e.split, e.dtype, format_time(e.created))
        status = e.status + (" (in use)" if e.in_use else "")
        rows.append((*("-" if c is None else str(c) for c in cells), format_time(e.last_used), status))
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows)


def show(root) -> None:
    entries = list_caches(root)
    if entries:
        print(table(entries))
    in_use = sum(e.in_use for e in entries)
    print(f"{len(entries)} keys in {root}, {format_size(sum(e.bytes for e in entries))}" + (f" ({in_use} in use)" if in_use else ""))


def prune(root, args: argparse.Namespace) -> PruneResult:
    older_than = parse_age(args.older_than) if args.older_than else None
    max_size = parse_size(args.max_size) if args.max_size else None
    return prune_caches(root, older_than=older_than, max_size=max_size, keep=args.keep, dry_run=args.dry_run)


def main(argv: list[str]) -> None:
    parser_ = parser()
    args = parser_.parse_args(argv)
    if args.keep is not None and args.keep < 0:
        parser_.error(f"--keep {args.keep}: give how many keys to keep, 0 or more.")
    log_warnings()
    root = args.prefix_cache_dir or default_cache_dir()
    if args.command == "list":
        if args.json:
            entries = report_errors(lambda: list_caches(root))
            print(json.dumps({"root": str(root), "keys": [e.as_json() for e in entries]}, indent=1))
        else:
            report_errors(lambda: show(root))
        return
    result = report_errors(lambda: prune(root, args))
    verb = "Would remove" if args.dry_run else "Removed"
    for entry in result.removed:
        print(f"{verb} {entry.folder} ({format_size(entry.bytes)}, {entry.status}, last used {format_time(entry.last_used)})")
    for entry, why in result.skipped:
        print(f"Skipped {entry.folder}: {why}")
    print(f"{'Would free' if args.dry_run else 'Freed'} {format_size(result.freed)}.")
