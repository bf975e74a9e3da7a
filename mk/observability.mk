# Observability: Grafana dashboards (generated), alert rules (promtool). Included by the Makefile.

.PHONY: dashboards dashboards-check alerts-check

dashboards: $(STAMP) ## regenerate dashboards/*.json from dashboards/src/ (Grafana's foundation SDK)
	$(PY) -m dashboards.src

dashboards-check: $(STAMP) ## fail if dashboards/*.json differ from what the generator renders
	$(PY) -m dashboards.src --check

alerts-check: system-deps ## promtool check + unit-test the alert rules
	promtool check rules dashboards/alerts.yml
	cd dashboards && promtool test rules alerts_test.yml
