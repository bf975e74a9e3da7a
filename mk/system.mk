# Debian packages the tests use: Prometheus + promtool, and PgBouncer (the transaction-pooling
# proof). Installed once, idempotent.
.PHONY: system-deps
system-deps: ## install Debian packages the tests need (prometheus, promtool, pgbouncer)
	@command -v promtool >/dev/null 2>&1 && test -x /usr/sbin/pgbouncer || { \
	  echo "installing prometheus and pgbouncer (Debian) ..."; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus pgbouncer >/dev/null; }
