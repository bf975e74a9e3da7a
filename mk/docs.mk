# Generated references: docs/configuration.md from app/config.py's Settings, the chart README's
# values table from values.yaml's `# --` comments. Included by the main Makefile.

.PHONY: docs docs-check

docs: $(STAMP) ## regenerate the configuration and chart values references
	$(PY) scripts/render_settings_doc.py
	$(PY) scripts/render_chart_values_doc.py

docs-check: $(STAMP) ## fail if a generated reference differs from its source
	$(PY) scripts/render_settings_doc.py --check
	$(PY) scripts/render_chart_values_doc.py --check
