# job-doctor — slim, non-root image. The install steps mirror the tested venv install
# (`pip install .` into a venv, as `make install` does); base images cannot be pulled on the
# machines this was developed on, so the image itself was not built there.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY handlers ./handlers
COPY config ./config
COPY prompts ./prompts
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --upgrade pip \
 && /opt/venv/bin/pip install --no-cache-dir .

FROM python:3.11-slim
RUN groupadd --system jd && useradd --system --gid jd --home-dir /app --shell /usr/sbin/nologin jd
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /app
USER jd
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status == 200 else 1)"
# SIGTERM drains in-flight work within JOB_DOCTOR_HTTP__SHUTDOWN_GRACE_S (default 20 s)
STOPSIGNAL SIGTERM
ENTRYPOINT ["job-doctor"]
CMD ["serve"]
