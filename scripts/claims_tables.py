"""Regenerate the READMEs' claims, experiments and timing tables from the committed results.json files.

    python scripts/claims_tables.py           # rewrite the tables (also: make tables)
    python scripts/claims_tables.py --check   # exit 1 if a README is out of date with its results

The results are ``mechmem/papers/<paper>/results/<preset>.json``, copied from ``mechmem reproduce`` runs
(``runs/<paper>-<preset>/results.json``); a preset without a file is shown as "not run".
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from mechmem.pages.claims_table import TIMED, claims_table, experiments_table, papers_table, timings_table
from mechmem.storage.files import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
PAPERS_DIR = ROOT / "mechmem" / "papers"


def results_file(paper: str, preset: str) -> Path:
    return PAPERS_DIR / paper / "results" / f"{preset}.json"


def load_results(paper: str) -> dict[str, dict | None]:
    """Every preset's committed results (``None`` where a preset has not been run)."""
    out = {}
    for preset in TIMED:
        path = results_file(paper, preset)
        out[preset] = json.loads(path.read_text()) if path.is_file() else None
    return out


BLOCK = re.compile(r"(<!-- generated:(?P<name>[a-z]+) -->\n)(?P<body>.*?)(<!-- /generated:(?P=name) -->)", re.S)


def fill(text: str, blocks: dict[str, str], where: str = "README") -> str:
    """``text`` with each generated block replaced by ``blocks[name]`` (every block must be there)."""
    found = {m.group("name") for m in BLOCK.finditer(text)}
    missing = sorted(set(blocks) - found)
    if missing:
        raise ValueError(f"{where}: no <!-- generated:{missing[0]} --> ... <!-- /generated:{missing[0]} --> markers")
    return BLOCK.sub(
        lambda m: m.group(1) + blocks.get(m.group("name"), m.group("body").rstrip("\n")) + "\n" + m.group(4), text
    )


def paper_blocks(paper: str, reproduction) -> dict[str, str]:
    results = load_results(paper)
    blocks = {
        "claims": claims_table(reproduction, results),
        "experiments": experiments_table(reproduction, results),
        "timings": timings_table(results),
    }
    if reproduction.checks:
        blocks["checks"] = claims_table(reproduction, results, kind="checks")
    return blocks


def update_readmes(check: bool = False) -> list[Path]:
    """Regenerate every README's tables; returns the files that were (``check``: would be) changed."""
    from mechmem.contract.reproducing import reproductions

    repros = reproductions()
    targets = {PAPERS_DIR / paper / "README.md": paper_blocks(paper, repro) for paper, repro in repros.items()}
    targets[ROOT / "README.md"] = {"papers": papers_table(repros, {paper: load_results(paper) for paper in repros})}
    changed = []
    for path, blocks in targets.items():
        old = path.read_text()
        new = fill(old, blocks, str(path.relative_to(ROOT)))
        if new != old:
            changed.append(path)
            if not check:
                atomic_write_text(path, new)
    return changed


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
