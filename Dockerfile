# syncd image, built from the repository root: docker build -t syncd:0.1.0 .
# The Kubernetes Deployment (deploy/k8s/) runs it as uid 10001 with a read-only root filesystem.

FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml ./
COPY requirements/run.lock ./requirements/run.lock
COPY syncd ./syncd
# The dependencies exactly as locked (versions and hashes), then syncd as a wheel, not an editable
# checkout: the migrations are package data, so site-packages holds all of syncd.
RUN python -m venv /opt/syncd/.venv \
 && /opt/syncd/.venv/bin/pip install --no-cache-dir --require-hashes -r requirements/run.lock \
 && /opt/syncd/.venv/bin/pip wheel --no-cache-dir --no-deps --wheel-dir /tmp/wheels . \
 && /opt/syncd/.venv/bin/pip install --no-cache-dir --no-deps /tmp/wheels/syncd-*.whl

FROM python:3.11-slim-bookworm
# pg_dump/pg_restore for `syncd backup|restore` (the backup CronJob): the server's major version.
# Not pinned to a Debian revision: bookworm security updates replace it and the old one disappears.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends postgresql-client-15 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 syncd \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin syncd
COPY --from=build /opt/syncd /opt/syncd
ENV PATH=/opt/syncd/.venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SYNCD_HTTP_LISTEN=0.0.0.0:9187
USER 10001:10001
EXPOSE 9187
ENTRYPOINT ["/opt/syncd/.venv/bin/syncd"]
CMD ["run", "--config", "/etc/syncd/syncd.toml"]
