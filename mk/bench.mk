# Benchmark and load test (`python -m bench`, the top-level bench/ package, not in the image): a
# private stack, the machine's limits, the one-by-one baseline, a consumer drain, a flash sale
# through the HTTP API, and the API against its limit with wrk (ceiling, presses, status reads,
# a 512-connection burst, the current code vs BENCH_BASELINE in interleaved rounds); prints the
# table and writes $(BENCH_OUT)/bench.json and $(BENCH_OUT)/bench.png. Not part of `make test`
# (a smoke run is).
# Options: make bench BENCH_ARGS="--requests 200000 --generators 2"  (see --help)
BENCH_OUT  ?= bench-out
BENCH_ARGS ?=
# The "before" of the wrk phases: the code before the sale-scale work (hot path, pipelined gate,
# status from Redis). Any git revision; BENCH_BASELINE= measures the current code alone.
BENCH_BASELINE ?= 414dbf1
# The "before" of the whole-system sale (CPU per issued coupon by component): the code before
# that work (main when it began). BENCH_SALE_BASELINE= runs the current code's sale alone.
BENCH_SALE_BASELINE ?= be6c4ec

.PHONY: bench bench-help
bench: $(STAMP) system-deps kafka ## benchmark: table + bench-out/bench.json + bench-out/bench.png (~5 min)
	@mkdir -p "$(BENCH_OUT)"
	$(PY) -m bench --json "$(BENCH_OUT)/bench.json" --plot "$(BENCH_OUT)/bench.png" \
	  $(if $(BENCH_BASELINE),--baseline $(BENCH_BASELINE)) \
	  $(if $(BENCH_SALE_BASELINE),--sale-baseline $(BENCH_SALE_BASELINE)) $(BENCH_ARGS)

bench-help: $(STAMP) ## the bench's options
	$(PY) -m bench --help
