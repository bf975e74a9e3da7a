# Observability: Grafana dashboards (generated), alert rules (promtool). Included by the Makefile.

.PHONY: dashboards dashboards-check alerts-check dashboards-render

dashboards: $(STAMP) ## regenerate dashboards/*.json from dashboards/src/ (Grafana's foundation SDK)
	$(PY) -m dashboards.src

dashboards-check: $(STAMP) ## fail if dashboards/*.json differ from what the generator renders
	$(PY) -m dashboards.src --check

alerts-check: system-deps ## promtool check + unit-test the alert rules
	promtool check rules dashboards/alerts.yml
	cd dashboards && promtool test rules alerts_test.yml

# The pictures in docs/img/ are drawn from a real sale (burst, consumer stall, recovery) scraped by
# a real Prometheus: the test below runs the sale, draws every dashboard and fails on a panel
# without data (tests/e2e/test_dashboard_pictures.py; no Grafana server is involved).
dashboards-render: $(STAMP) system-deps kafka ## draw dashboards/*.json from a real sale into docs/img/*.png
	COUPON_DASHBOARD_PICTURES=docs/img $(PY) -m pytest -q -p no:cacheprovider tests/e2e/test_dashboard_pictures.py
