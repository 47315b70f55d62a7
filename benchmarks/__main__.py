"""`python -m benchmarks run [--quick] [--out DIR] [NAME ...]` and `python -m benchmarks list`."""

from ._harness import main

if __name__ == "__main__":
    raise SystemExit(main())
