# Stand-in for python:3.11-slim-bookworm, built by scripts/docker-base-images.sh where no
# registry answers: Debian's Python 3.11 with venv (and pip inside a venv, as the Dockerfile
# uses it), the CA bundle, and `python` on PATH. No system-wide pip: Debian marks its Python
# externally managed (PEP 668), so install into a venv as the project's Dockerfile does.
FROM debian:bookworm-slim
LABEL org.opencontainers.image.description="python:3.11-slim-bookworm stand-in from Debian packages (scripts/docker-base-images.sh)"
ENV LANG=C.UTF-8
# The host's own trust anchors (its /usr/local/share/ca-certificates, copied here by the
# script; often none): a machine that cannot pull images may reach PyPI only through a
# TLS-inspecting proxy, and pip in the project's build must trust what the host trusts.
# ca-certificates' install adds them to the system bundle.
COPY local-ca/ /usr/local/share/ca-certificates/
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        python3.11 python3.11-venv python-is-python3 ca-certificates \
    && rm -rf /var/lib/apt/lists/*
CMD ["python3"]
