# Stand-in for rabbitmq:3, built by scripts/docker-base-images.sh where no registry answers:
# Debian's rabbitmq-server (3.10: quorum queues with x-delivery-limit, at-least-once
# dead-lettering), data in /var/lib/rabbitmq. Like the official image it creates
# RABBITMQ_DEFAULT_USER/RABBITMQ_DEFAULT_PASS on first start (RabbitMQ reads them itself)
# and listens on 5672; no management plugin (etl-worker needs none).
FROM debian:bookworm-slim
LABEL org.opencontainers.image.description="rabbitmq:3 stand-in from Debian packages (scripts/docker-base-images.sh)"
RUN apt-get update \
    && apt-get install -y --no-install-recommends rabbitmq-server \
    && rm -rf /var/lib/apt/lists/* \
    && printf 'listeners.tcp.default = 5672\nloopback_users.guest = true\n' > /etc/rabbitmq/rabbitmq.conf
VOLUME /var/lib/rabbitmq
USER rabbitmq
# The node's name must not change with the container's: its data directory is named by it.
ENV RABBITMQ_NODENAME=rabbit@localhost HOME=/var/lib/rabbitmq
EXPOSE 5672
CMD ["/usr/lib/rabbitmq/bin/rabbitmq-server"]
