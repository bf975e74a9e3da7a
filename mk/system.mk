# Debian packages the local stack, the tests and the bench use, installed when missing (idempotent):
#   server-deps  PostgreSQL, Redis and Java (for Apache Kafka, whose jars `make kafka` fetches):
#                `make run` starts throw-away servers from them when no COUPON_* URL answers;
#                `make test` starts its own.
#   system-deps  server-deps + Prometheus/promtool, Alertmanager (alert delivery tests), PgBouncer
#                (transaction pooling) and wrk (bench).
# Debian's packages start no service here (the servers are ours, on loopback, on free ports).
# Without apt-get (or not root) they say in one line what is missing and what to set instead.
SERVER_DEBS := postgresql redis-server redis-tools
# Apache Kafka runs on Java 17+ and `make kafka` fetches its jars with Maven (both only if missing).
JAVA_DEBS := openjdk-17-jre-headless maven
SYSTEM_DEBS := $(SERVER_DEBS) prometheus prometheus-alertmanager pgbouncer wrk kcat

# $(call apt-install,<packages>,<what to do instead>): install what is missing, or say why not.
define apt-install
	@if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  echo "installing $(1) (Debian) ..."; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(1) >/dev/null; \
	else \
	  echo "missing Debian packages $(1) and apt-get is not available as root here: install them, or $(2)" >&2; \
	  exit 1; \
	fi
endef

HAVE_JAVA = command -v java >/dev/null 2>&1 && command -v mvn >/dev/null 2>&1
HAVE_SERVERS = $(HAVE_JAVA) && test -x "$$(ls -d /usr/lib/postgresql/*/bin/postgres 2>/dev/null | tail -n1)" && command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1
HAVE_SYSTEM = $(HAVE_SERVERS) && command -v promtool >/dev/null 2>&1 && test -x /usr/bin/prometheus-alertmanager && test -x /usr/sbin/pgbouncer && command -v wrk >/dev/null 2>&1 && command -v kcat >/dev/null 2>&1

.PHONY: server-deps system-deps
server-deps: ## install Debian's PostgreSQL and Redis when missing (what make run starts)
	@$(HAVE_SERVERS) || { $(MAKE) --no-print-directory _server-debs; } || { \
	  [ -n "$$COUPON_DATABASE_URL" ] && [ -n "$$COUPON_REDIS_URL" ] && \
	  echo "using COUPON_DATABASE_URL and COUPON_REDIS_URL instead" >&2; }

system-deps: ## install Debian packages the tests need (postgresql, redis, prometheus, alertmanager, pgbouncer, wrk)
	@$(HAVE_SYSTEM) || $(MAKE) --no-print-directory _system-debs

.PHONY: _server-debs _system-debs
_server-debs:
	$(call apt-install,$(SERVER_DEBS) $(if $(shell command -v java && command -v mvn),,$(JAVA_DEBS)),set COUPON_DATABASE_URL, COUPON_REDIS_URL and COUPON_KAFKA_BOOTSTRAP to servers of yours)
_system-debs:
	$(call apt-install,$(SYSTEM_DEBS) $(if $(shell command -v java && command -v mvn),,$(JAVA_DEBS)),run the tests on Debian/Ubuntu as root)
