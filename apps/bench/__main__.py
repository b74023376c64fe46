"""``python -m apps.bench``: the benchmark's command line (see ``--help``)."""
from apps.bench.cli import main

if __name__ == "__main__":
    main()
