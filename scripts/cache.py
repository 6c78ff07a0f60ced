"""See and prune the frozen-prefix cache that training leaves on disk (as `hf cache scan` / `hf cache delete` do for the Hub's).

    python scripts/cache.py list                                  # every key: size, examples, model, depth, data, split, dtype, dates
    python scripts/cache.py list --json
    python scripts/cache.py prune --older-than 7d --dry-run       # what would go
    python scripts/cache.py prune --max-size 20GB --keep 3        # least recently used first; keys in use are skipped

Both take --trunk_cache_dir (default: hf_spam_trunk/ under the datasets cache, as training).
"""

import argparse
import json
import logging
import sys

from hf_spam.cache_management import format_size, format_time, list_caches, parse_age, parse_size, prune_caches
from hf_spam.cache_store import default_cache_dir
from hf_spam.errors import HfSpamError

COLUMNS = ("key", "size", "examples", "model", "depth", "data", "split", "dtype", "created", "last used", "status")


def table(entries) -> str:
    rows = [COLUMNS]
    for e in entries:
        data = e.data if e.data is None or len(e.data) <= 40 else e.data[:39] + "…"  # --json has it whole, and the full key
        cells = (e.folder.name[:12], format_size(e.bytes), e.examples, e.model, e.depth, data, e.split, e.dtype, format_time(e.created))
        status = e.status + (" (in use)" if e.in_use else "")
        rows.append((*("-" if c is None else str(c) for c in cells), format_time(e.last_used), status))
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["list", "prune"])
    parser.add_argument("--trunk_cache_dir", default=None, help=f"the cache folder (default: {default_cache_dir()})")
    parser.add_argument("--json", action="store_true", help="list: one JSON document instead of the table")
    parser.add_argument("--older-than", help="prune: keys last used longer ago than this (7d, 12h, 30m)")
    parser.add_argument("--max-size", help="prune: then least recently used keys until the rest fits (20GB, 500MB)")
    parser.add_argument("--keep", type=int, help="prune: at most this many keys, the most recently used")
    parser.add_argument("--dry-run", action="store_true", help="prune: print what would be removed, remove nothing")
    args = parser.parse_args()
    if args.keep is not None and args.keep < 0:
        parser.error(f"--keep {args.keep}: give how many keys to keep, 0 or more.")
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    root = args.trunk_cache_dir or default_cache_dir()
    try:
        if args.command == "list":
            entries = list_caches(root)
            if args.json:
                print(json.dumps({"root": str(root), "keys": [e.as_json() for e in entries]}, indent=1))
                return
            if entries:
                print(table(entries))
            in_use = sum(e.in_use for e in entries)
            print(f"{len(entries)} keys in {root}, {format_size(sum(e.bytes for e in entries))}" + (f" ({in_use} in use)" if in_use else ""))
            return
        older_than = parse_age(args.older_than) if args.older_than else None
        max_size = parse_size(args.max_size) if args.max_size else None
        result = prune_caches(root, older_than=older_than, max_size=max_size, keep=args.keep, dry_run=args.dry_run)
    except HfSpamError as error:  # the message names the folder or option and what to do: no traceback
        logging.getLogger("hf_spam").error("%s", error)
        sys.exit(2)
    verb = "Would remove" if args.dry_run else "Removed"
    for entry in result.removed:
        print(f"{verb} {entry.folder} ({format_size(entry.bytes)}, {entry.status}, last used {format_time(entry.last_used)})")
    for entry, why in result.skipped:
        print(f"Skipped {entry.folder}: {why}")
    print(f"{'Would free' if args.dry_run else 'Freed'} {format_size(result.freed)}.")


if __name__ == "__main__":
    main()
