# Stand-in for postgres:15-bookworm, built by scripts/docker-base-images.sh where no
# registry answers: Debian's PostgreSQL 15, with the parts of the official image's contract
# docker-compose.yml relies on (postgres-entrypoint.sh): POSTGRES_USER, POSTGRES_PASSWORD
# and POSTGRES_DB create the cluster on first start, data in /var/lib/postgresql/data,
# pg_isready on PATH, the server runs as the postgres user.
FROM debian:bookworm-slim
LABEL org.opencontainers.image.description="postgres:15-bookworm stand-in from Debian packages (scripts/docker-base-images.sh)"
ENV LANG=C.UTF-8 \
    PGDATA=/var/lib/postgresql/data \
    PATH=/usr/lib/postgresql/15/bin:$PATH
# create_main_cluster = false: the entrypoint makes the cluster, in the volume, at first start.
RUN install -d /etc/postgresql-common/createcluster.d \
    && echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.d/docker.conf \
    && apt-get update \
    && apt-get install -y --no-install-recommends postgresql-15 \
    && rm -rf /var/lib/apt/lists/* \
    && install -d -o postgres -g postgres -m 3777 /var/run/postgresql \
    && install -d -o postgres -g postgres -m 0700 "$PGDATA"
COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
VOLUME /var/lib/postgresql/data
ENTRYPOINT ["docker-entrypoint.sh"]
# SIGINT is PostgreSQL's fast shutdown, as in the official image: sessions are ended, not
# waited for.
STOPSIGNAL SIGINT
EXPOSE 5432
CMD ["postgres"]
