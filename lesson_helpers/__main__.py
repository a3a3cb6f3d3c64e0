"""Command line: ``python -m lesson_helpers fetch|check [--episode N] [--mirror DIR]``."""

import argparse
import sys
from collections import Counter

from .data import LessonDataError, check, data_dir, fetch, fix_for, keras_cache_dir


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m lesson_helpers",
        description="Fetch and check the lesson's data and pretrained weights.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("fetch", "download (or copy from a mirror) and verify the files"),
                       ("check", "list each file as ok / missing / corrupt, with the fix")):
        cmd = sub.add_parser(name, help=text, description=text)
        cmd.add_argument("--episode", type=int, action="append",
                         help="only this episode's files (repeatable; default: all)")
        if name == "fetch":
            cmd.add_argument("--mirror", metavar="DIR",
                             help="copy from this local mirror instead of the internet "
                                  "(default: $LESSON_MIRROR if set)")
        else:
            cmd.add_argument("--all", action="store_true", help="print every file, not only problems")
    args = parser.parse_args(argv)
    try:
        if args.command == "fetch":
            fetch(args.episode, mirror=args.mirror)
        return report(check(args.episode), verbose=getattr(args, "all", False))
    except LessonDataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


def report(states, verbose=False):
    """Print one line per problem file (every file with verbose) and a summary; 0 when all usable."""
    for entry, state in states:
        if verbose or state != "ok":
            fix = fix_for(entry, state)
            print(f"{state:9} {entry.target}" + (f"  -> {fix}" if fix else ""))
    counts = Counter(state for _, state in states)
    print(f"{len(states)} files: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
          + f" (data: {data_dir()}, weights: {keras_cache_dir()})")
    return 0 if set(counts) <= {"ok", "stand-in"} else 1


if __name__ == "__main__":
    sys.exit(main())
