# syntax=docker/dockerfile:1
# The ptif worker: `ptif process` by default, any other ptif command by argument.
#
#   docker build -t ptif .
#   docker run --rm -e PTIF_SOURCE=s3://scans -e PTIF_PROCESS=s3://queue -e PTIF_IMAGES=s3://iiif ptif
#
# Stages: `build` installs ptif and its locked dependencies into /opt/ptif; `runtime` is that
# environment on a slim Debian with Ghostscript (EPS) and a non-root user; the last stage is
# the runtime plus a smoke test that converts a tiny image of every format, so an image that
# cannot read one of them is never built.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG UV_VERSION=0.13.9
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/ptif
RUN pip install --no-cache-dir "uv==${UV_VERSION}"
WORKDIR /src
# Dependencies first (a layer that changes only with the lock file), then ptif itself.
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-default-groups --no-install-project --extra heic --extra s3
COPY README.md LICENSE ./
COPY src ./src
RUN uv sync --frozen --no-default-groups --no-editable --extra heic --extra s3

FROM ${PYTHON_IMAGE} AS runtime
# Ghostscript renders EPS (ptif runs it with -dSAFER); libvips, PDFium, OpenJPEG and libheif
# come inside the Python wheels. Debian's security updates decide the exact version.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ghostscript \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 ptif \
    && useradd --system --uid 10001 --gid ptif --create-home --home-dir /home/ptif ptif
COPY --from=build /opt/ptif /opt/ptif
ENV PATH=/opt/ptif/bin:$PATH \
    PYTHONUNBUFFERED=1
# Numeric, so that Kubernetes' runAsNonRoot can check it.
USER 10001:10001
WORKDIR /home/ptif
ENTRYPOINT ["ptif"]
CMD ["process"]

FROM runtime
# Runs as the non-root user; the script is mounted for this step only and leaves nothing behind.
RUN --mount=type=bind,source=scripts/smoke-test.py,target=/tmp/smoke-test.py \
    python /tmp/smoke-test.py
