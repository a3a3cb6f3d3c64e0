"""Command line: ``python -m lesson_helpers fetch|check [--episode N] [--mirror DIR]``.

Maintainers, on a machine with internet: ``python -m lesson_helpers hash-weights --check|--write``
compares (or writes) the real MobileNetV2 weights' sha256 with the registry.
"""

import argparse
import sys
from collections import Counter, defaultdict

from .data import (
    GOOD_STATES,
    LessonDataError,
    check,
    episode_groups,
    data_dir,
    fetch,
    fix_for,
    hash_weights,
    keras_cache_dir,
)

# A group with more missing files than this is summarised in one line.
LIST_AT_MOST = 5


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m lesson_helpers",
        description="Fetch and check the lesson's data and pretrained weights.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("fetch", "download (or copy from a mirror) and verify the files"),
                       ("check", "say which files are ok / missing / corrupt, with the fix")):
        cmd = sub.add_parser(name, help=text, description=text)
        cmd.add_argument("--episode", type=int, action="append",
                         help="only this episode's files (repeatable; default: all)")
        if name == "fetch":
            cmd.add_argument("--mirror", metavar="DIR",
                             help="copy from this local mirror instead of the internet "
                                  "(default: $LESSON_MIRROR if set)")
        else:
            cmd.add_argument("--all", action="store_true", help="print every file, not only problems")
    text = "maintainers: download the real MobileNetV2 weights and compare their sha256 with the registry"
    cmd = sub.add_parser("hash-weights", help=text, description=text)
    mode = cmd.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="exit 1 when a hash differs or is not recorded")
    mode.add_argument("--write", action="store_true", help="write the hashes into lesson_helpers/registry.csv")
    args = parser.parse_args(argv)
    try:
        if args.command == "hash-weights":
            return hash_weights(write=args.write)
        if args.command == "fetch":
            fetch(args.episode, mirror=args.mirror)
        return report(check(args.episode), verbose=getattr(args, "all", False), episodes=args.episode)
    except LessonDataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


def report(states, verbose=False, episodes=None):
    """Print the problems (a group's many missing files in one line), a line per episode and a summary.

    Returns 0 when every required file is usable.
    """
    missing = defaultdict(list)
    for entry, state in states:
        if state == "missing" and not verbose:
            missing[entry.group].append(entry)
        elif verbose or state not in ("ok", "absent"):
            fix = fix_for(entry, state)
            print(f"{state:9} {entry.target}" + (f"  -> {fix}" if fix else ""))
    for group, entries in missing.items():
        if len(entries) <= LIST_AT_MOST:
            for entry in entries:
                print(f"{'missing':9} {entry.target}  -> {fix_for(entry, 'missing')}")
        else:
            print(f"{'missing':9} {len(entries):,} files of {group}/  -> run `{_fetch_command(group)}` "
                  "(add --mirror DIR when offline)")
    by_group = defaultdict(list)
    for entry, state in states:
        by_group[entry.group].append(state)
    groups_of = episode_groups()
    for episode in episodes or sorted(groups_of):
        episode_states = [s for group in groups_of[episode] for s in by_group.get(group, [])]
        if not episode_states:
            continue
        bad = [s for s in episode_states if s not in GOOD_STATES + ("absent",)]
        absent = episode_states.count("absent")
        extra = f"; {absent} optional file(s) absent" if absent else ""
        if not bad:
            print(f"episode {episode}: ready ({len(episode_states) - absent:,} files{extra})")
        elif set(bad) == {"missing"} and len(bad) == len(episode_states) - absent:
            print(f"episode {episode}: not fetched yet: run `python -m lesson_helpers fetch --episode {episode}`")
        else:
            counts = ", ".join(f"{n:,} {s}" for s, n in sorted(Counter(bad).items()))
            print(f"episode {episode}: {counts} of {len(episode_states):,} files: see the lines above")
    counts = Counter(state for _, state in states)
    print(f"{len(states)} files: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
          + f" (data: {data_dir()}, weights: {keras_cache_dir()})")
    return 0 if set(counts) <= {*GOOD_STATES, "absent"} else 1


def _fetch_command(group):
    episodes = [e for e, groups in episode_groups().items() if group in groups]
    return "python -m lesson_helpers fetch" + (f" --episode {episodes[0]}" if episodes else "")


if __name__ == "__main__":
    sys.exit(main())
