# Debian packages the tests and the bench use: Prometheus + promtool, PgBouncer (the
# transaction-pooling proof) and wrk (the bench's load generator). Installed once, idempotent.
.PHONY: system-deps
system-deps: ## install Debian packages the tests need (prometheus, promtool, pgbouncer, wrk)
	@command -v promtool >/dev/null 2>&1 && test -x /usr/sbin/pgbouncer && command -v wrk >/dev/null 2>&1 || { \
	  echo "installing prometheus, pgbouncer and wrk (Debian) ..."; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus pgbouncer wrk >/dev/null; }
