# One image for every role: the worker (the default command), the producer (etl-enqueue),
# Flower, etl-seed, etl-plan, etl-metrics and etl-report (the lock holds the report extra).
# Build: docker build -t etl-worker . (add --network host where the engine gives containers
# no route out: scripts/docker-engine.sh).
#
# Dependencies come only from requirements.lock: every package pinned and hash-checked, the
# build backend included, so a build resolves nothing and fetches nothing unpinned.
# Regenerate the lock after changing pyproject.toml (the command is in its first lines).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
COPY requirements.lock /tmp/requirements.lock
# --no-deps: the lock is the whole dependency closure; anything missing from it fails here.
RUN /opt/venv/bin/pip install --require-hashes --no-deps -r /tmp/requirements.lock
WORKDIR /src
# README.md* (a pattern): the package's readme, copied when there is one.
COPY pyproject.toml README.md* ./
COPY etl_worker ./etl_worker
# Built with the locked setuptools: no build isolation, so nothing is fetched unpinned.
RUN /opt/venv/bin/pip install --no-deps --no-build-isolation .

FROM ${PYTHON_IMAGE}
# tini is PID 1: it reaps orphans and forwards SIGTERM to Celery's main process alone (not
# with -g: a SIGTERM to the whole process group would kill pool processes mid-partition),
# so `docker stop` starts Celery's warm shutdown: no new tasks, running partitions finish.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini=0.19.0-1+b3 \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 etl \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /app --shell /usr/sbin/nologin etl
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /app
USER 10001:10001
# Healthy = this container's worker answers a ping over the broker, addressed to its own node
# name (worker@<container hostname>, as the default command names it): a worker stuck after
# a Redis restart fails this even though its process is alive. Other roles turn it off.
HEALTHCHECK --interval=60s --timeout=30s --start-period=60s --retries=3 \
    CMD ["sh", "-c", "celery -A etl_worker inspect ping --destination \"worker@$HOSTNAME\" --timeout 10 > /dev/null || exit 1"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/tini", "--"]
# Exec form: no shell between tini and Celery to swallow the signal.
CMD ["celery", "-A", "etl_worker", "worker", "--hostname", "worker@%h", "--loglevel", "INFO", \
     "--without-mingle", "--without-gossip"]
