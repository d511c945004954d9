# syntax=docker/dockerfile:1
# The service as a container image: the wheel and its locked runtime dependencies on a slim
# Python, run as a user without privileges. It never migrates on start: `todo-api migrate` runs
# once per release as a job of its own, before new containers start (docs/deployment.md).
# tests/system/test_deployment.py performs these steps without a container runtime.

FROM python:3.12-slim AS build
WORKDIR /src
COPY . .
RUN pip wheel --no-cache-dir --wheel-dir /wheels -r requirements-runtime.lock \
 && pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.12-slim
RUN useradd --system --uid 10001 --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin todo-api
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    --mount=type=bind,source=requirements-runtime.lock,target=/requirements-runtime.lock \
    python -m venv /opt/todo-api \
 && /opt/todo-api/bin/pip install --no-cache-dir --no-index --find-links /wheels \
      -r /requirements-runtime.lock todo-api
ENV PATH=/opt/todo-api/bin:$PATH PYTHONUNBUFFERED=1 PORT=8000
USER todo-api
WORKDIR /tmp
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 CMD ["todo-api", "health"]
CMD ["todo-api", "serve", "--no-migrate", "--host", "0.0.0.0"]
