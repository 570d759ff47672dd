"""Regenerate the READMEs' claims, experiments and timing tables from the committed results.json files.

    python scripts/claims_tables.py           # rewrite the tables (also: make tables)
    python scripts/claims_tables.py --check   # exit 1 if a README is out of date with its results

The results are ``mechmem/papers/<paper>/results/<preset>.json``, copied from ``mechmem reproduce`` runs
(``runs/<paper>-<preset>/results.json``); a preset without a file is shown as "not run".
"""

from __future__ import annotations

import argparse
import sys

from mechmem.tables import ROOT, update_readmes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report READMEs that are out of date")
    args = parser.parse_args(argv)
    changed = update_readmes(check=args.check)
    for path in changed:
        print(f"{'out of date' if args.check else 'updated'}: {path.relative_to(ROOT)}")
    if args.check and changed:
        print("run `make tables` to regenerate them", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
