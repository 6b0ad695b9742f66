# Stand-in for redis:7-bookworm, built by scripts/docker-base-images.sh where no registry
# answers: Debian's redis-server 7 and redis-cli, data in the /data volume, run as the redis
# user. Unlike the official image, protected mode stays on: without --requirepass (which
# docker-compose.yml always sets) only connections from inside the container are served.
FROM debian:bookworm-slim
LABEL org.opencontainers.image.description="redis:7-bookworm stand-in from Debian packages (scripts/docker-base-images.sh)"
RUN apt-get update \
    && apt-get install -y --no-install-recommends redis-server \
    && rm -rf /var/lib/apt/lists/* \
    && install -d -o redis -g redis /data
# A named volume starts as a copy of /data, owner included: redis can write it.
VOLUME /data
WORKDIR /data
USER redis
EXPOSE 6379
CMD ["redis-server"]
