"""Command line: `python -m cdm_core <command>` (also `cfdm`): sample, datasets, sensitivity, sweep,
memorisation, split-half, attribute, figure, shard.

Same operations and parameter names as the Python API. Bad input exits with code 2 and one
line on stderr; progress goes to stderr as a single updating line.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from cdm_core.cli.commands import COMMANDS
from cdm_core.cli.options import OneLineParser
from cdm_core.errors import CdmInputError

log = logging.getLogger("cdm_core")


def build_parser() -> OneLineParser:
    prog = "cfdm" if Path(sys.argv[0]).name == "cfdm" else "python -m cdm_core"  # the console script, or -m
    p = OneLineParser(prog=prog, description=__doc__.splitlines()[0])
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    for register in COMMANDS:
        register(sub)
    return p


def main(argv=None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        a = build_parser().parse_args(argv)
        if a.verbose:
            logging.getLogger().setLevel(logging.INFO)
        return a.func(a)
    except CdmInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except MemoryError:
        print("error: out of memory; ask for fewer samples, draws or a smaller batch size", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
