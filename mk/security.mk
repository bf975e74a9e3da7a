.PHONY: audit
audit: $(STAMP) ## pip-audit the locked requirements (fails on a known vulnerability)
	$(PY) .ci/audit.py
