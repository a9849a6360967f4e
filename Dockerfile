# syntax=docker/dockerfile:1
# sidecache image: the wheel is built in the first stage, installed into a virtualenv in
# the second, so the final image carries no build tools and no source tree.
#   docker build -t sidecache .
#   docker run -p 8080:8080 -p 9090:9090 -e SIDECACHE_UPSTREAM=http://agent:8000 sidecache

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY core ./core
COPY proxy ./proxy
# sidecache's own wheel plus a wheel of every dependency (uvloop included), so the runtime
# stage installs offline, exactly these files.
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[fast]"

FROM python:3.11-slim
ENV PATH=/opt/sidecache/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m venv /opt/sidecache \
    && /opt/sidecache/bin/pip install --no-cache-dir --no-index --no-deps /wheels/*.whl \
    && groupadd --system --gid 10001 sidecache \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin sidecache
COPY config.yaml /etc/sidecache/config.yaml
# Numeric, so Kubernetes' runAsNonRoot can check it.
USER 10001:10001
EXPOSE 8080 9090
# slim has no curl: ask /healthz with the Python that is there (non-2xx raises, exit 1).
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9090/healthz', timeout=2)"]
ENTRYPOINT ["sidecache", "run"]
CMD ["--config", "/etc/sidecache/config.yaml"]
