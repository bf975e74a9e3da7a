# Debian packages the tests use (Prometheus + promtool). Installed once, idempotent.
.PHONY: system-deps
system-deps: ## install Debian packages the tests need (prometheus, promtool)
	@command -v promtool >/dev/null 2>&1 || { \
	  echo "installing prometheus (Debian) ..."; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }
