# syntax=docker/dockerfile:1
# One image for the three services and the migration; the first argument chooses (deploy/entrypoint.sh):
#   docker run IMAGE migrate      docker run IMAGE api      docker run IMAGE scp      docker run IMAGE housekeeper
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- builder: wheels for the project and every dependency (compilers only here, for platforms without wheels)
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
COPY scripts ./scripts
RUN pip wheel --wheel-dir /wheels .

# --- runtime: the installed wheels, a non-root user, no compiler, no pip cache
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="mwl-server" \
      org.opencontainers.image.description="DICOM Modality Worklist server: C-FIND SCP, REST API, housekeeper" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MWL_BIND_ADDRESS=0.0.0.0
# The wheels are bind-mounted from the builder, so they never become a layer of this image.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels mwl-server
# A fixed UID/GID, so that Kubernetes' runAsNonRoot can verify it and volumes can be prepared for it.
RUN groupadd --system --gid 10001 mwl \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/mwl --no-create-home \
       --shell /usr/sbin/nologin mwl \
    && install -d -o 10001 -g 10001 /var/lib/mwl
COPY --chmod=0755 deploy/entrypoint.sh /usr/local/bin/mwl-entrypoint
# The working folder holds ./data/worklists.db when no MWL_DATABASE_URL is given (a quick `docker run`).
WORKDIR /var/lib/mwl
USER 10001:10001
# DICOM (DicomPort), REST API (HttpPort), health/metrics of the SCP and of the housekeeper.
EXPOSE 4242 8042 8043 8044
ENTRYPOINT ["/usr/local/bin/mwl-entrypoint"]
CMD ["api"]
