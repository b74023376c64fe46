"""``python -m apps.benchmark``: the earlier name of ``python -m apps.bench`` (the benchmark package), kept working."""
import sys

from apps.bench.cli import main
from utils import cli

if __name__ == "__main__":
    sys.exit(cli.run(main))
