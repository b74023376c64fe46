"""``python -m apps.benchmark``: the earlier name of ``python -m apps.bench`` (the benchmark package), kept working."""
from apps.bench.cli import main

if __name__ == "__main__":
    main()
