# The service's image: python:3.11-slim, dependencies pinned by constraints.txt, run as an unprivileged
# user, a health check on /readyz. Secrets are never part of it: pass them at run time (environment
# variables, or a settings file mounted as a secret and named by BRIDGE_SETTINGS_FILE).
#   docker build -t fhir-whatsapp-bridge .
#   docker build -t fhir-whatsapp-bridge:demo --build-arg BRIDGE_EXTRAS=demo .   # adds the sandbox EHR
# To pin the base image by digest: --build-arg PYTHON_IMAGE=python:3.11-slim@sha256:<digest>; to build
# without Docker Hub, name a mirror's copy the same way. No `# syntax=` line: BuildKit would fetch that
# frontend image from Docker Hub, and this file needs nothing beyond the builder's own Dockerfile syntax.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/bridge
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY adapter ./adapter
COPY ehr ./ehr
COPY mappings ./mappings
COPY portal_links ./portal_links
COPY whatsapp ./whatsapp
ARG BRIDGE_EXTRAS=""
# A regular (not editable) install: the image needs no source tree, only the virtualenv. Compiled to
# bytecode here because the unprivileged user cannot write __pycache__: without it every start (and every
# `bridge` command) compiles the imports again, 3.1 s instead of 1.3 s of CPU, for 70 MB more image.
RUN /opt/bridge/bin/pip install -c constraints.txt ".${BRIDGE_EXTRAS:+[$BRIDGE_EXTRAS]}"

FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/bridge/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    BRIDGE_HTTP_HOST=0.0.0.0 \
    BRIDGE_HTTP_PORT=8000
RUN groupadd --system --gid 10001 bridge \
    && useradd --system --uid 10001 --gid bridge --home-dir /var/lib/bridge --create-home --shell /usr/sbin/nologin bridge
COPY --from=build /opt/bridge /opt/bridge
USER 10001:10001
WORKDIR /var/lib/bridge
EXPOSE 8000
# 200 when the database answers at the latest migration; an orchestrator routes traffic only then.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('BRIDGE_HTTP_PORT', '8000') + '/readyz', timeout=4)"]
# SIGTERM: the service stops taking requests, finishes the sends in flight and exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["bridge"]
CMD ["serve"]
