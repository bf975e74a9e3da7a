# Benchmark and load test (`python -m bench`, the top-level bench/ package, not in the image): a
# private stack, the machine's limits, the one-by-one baseline, a consumer drain and a flash sale
# through the HTTP API; prints the table and writes $(BENCH_OUT)/bench.json and
# $(BENCH_OUT)/bench.png. Not part of `make test` (a smoke run is).
# Options: make bench BENCH_ARGS="--requests 200000 --generators 2"  (see --help)
BENCH_OUT  ?= bench-out
BENCH_ARGS ?=

.PHONY: bench bench-help
bench: $(STAMP) ## benchmark: table + bench-out/bench.json + bench-out/bench.png (~2 min)
	@mkdir -p $(BENCH_OUT)
	$(PY) -m bench --json $(BENCH_OUT)/bench.json --plot $(BENCH_OUT)/bench.png $(BENCH_ARGS)

bench-help: $(STAMP) ## the bench's options
	$(PY) -m bench --help
