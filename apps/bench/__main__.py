"""``python -m apps.bench``: the benchmark's command line (see ``--help``)."""
import sys

from apps.bench.cli import main
from utils import cli

if __name__ == "__main__":
    sys.exit(cli.run(main))
