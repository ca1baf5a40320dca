"""paymesh benchmarks: `make bench` (bench/run.py); figures and findings in bench/README.md."""
