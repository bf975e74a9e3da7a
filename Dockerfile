# syntax=docker/dockerfile:1.7
#
# One file, one runtime, a target per process. The chart always passes the subcommand as args, so any
# target runs any process; the targets only set a sensible default CMD and give distinct tags:
#   docker build --target api      -t coupon-issuer-api:<tag> .
#   docker build --target consumer -t coupon-issuer-consumer:<tag> .
#   docker build -t coupon-issuer:<tag> .          # last stage: "runtime" (operator, lag exporter, jobs)
# `make image-check` builds every target with buildah and runs the chart's pods with podman
# (docs/deploy.md). The base is pinned to an exact patch release; pin a digest too with
#   --build-arg PYTHON_IMAGE=python:3.11.11-slim-bookworm@sha256:<digest>

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

# ---------------------------------------------------------------------------------------------------
# build: the project and every locked dependency as wheels (the only stage with a compiler)
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first, in their own layer (rebuilt only when the lock or pyproject.toml changes):
# exactly the versions in requirements.lock, which is what the tests ran. The lock also pins the
# dev tools; `-c` (constraints) takes from it only what the project's own dependencies pull in.
# A stub package stands in for app/ so that pip can resolve the project's dependencies.
COPY pyproject.toml requirements.lock ./
RUN mkdir app && touch app/__init__.py \
 && pip wheel --wheel-dir /wheels -c requirements.lock . \
 && rm -r app /wheels/coupon_issuer-*.whl
COPY app ./app
RUN pip wheel --no-deps --wheel-dir /wheels .

# ---------------------------------------------------------------------------------------------------
# install: the wheels installed, offline, into a prefix that base copies over /usr/local (no wheel
# layer in the image). A COPY rather than `RUN --mount=from=build`: buildah 1.28 (make image-check)
# mounts a fully cached stage empty, and the classic Docker builder has no --mount at all.
FROM ${PYTHON_IMAGE} AS install
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
COPY --from=build /wheels /wheels
RUN pip install --no-index --find-links=/wheels --prefix=/install coupon-issuer

# ---------------------------------------------------------------------------------------------------
# base: slim runtime with the installed project and its locked dependencies
FROM ${PYTHON_IMAGE} AS base
ARG UID=10001
ARG GID=10001
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    COUPON_LOG_FORMAT=json
RUN groupadd --system --gid "${GID}" coupon \
 && useradd --system --uid "${UID}" --gid "${GID}" --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin coupon
COPY --from=install /install /usr/local
RUN coupon-issuer --help >/dev/null
WORKDIR /tmp
# Numeric so that Kubernetes can verify runAsNonRoot without resolving names.
USER 10001:10001
# SIGTERM: the consumer finishes its batch, commits and leaves the group (see docs/CONTRACT.md).
STOPSIGNAL SIGTERM
ENTRYPOINT ["coupon-issuer"]
# No HEALTHCHECK: Kubernetes probes (/healthz, /readyz) do that job.

# ---------------------------------------------------------------------------------------------------
FROM base AS api
EXPOSE 8080
CMD ["api"]

FROM base AS consumer
EXPOSE 9100
CMD ["consumer"]

FROM base AS operator
EXPOSE 8081
CMD ["operator"]

FROM base AS lag-exporter
EXPOSE 9101
CMD ["lag-exporter"]

# Default target: the generic image used for the operator, the lag exporter and the migration job.
FROM base AS runtime
EXPOSE 8080 9100 9101
CMD ["api"]
