# Claude Nexus Proxy for teams: gunicorn with gevent workers, usually beside PostgreSQL
# (docker-compose.yml). Migrations are applied at start, waiting for the database.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY requirements.txt ./
RUN pip install -r requirements.txt

COPY wsgi.py ./
COPY app ./app
COPY migrations ./migrations
COPY templates ./templates
COPY static ./static
COPY packaging/gunicorn.conf.py packaging/entrypoint.sh ./packaging/

# A user of its own; it owns only what the proxy writes: data/ (the SQLite default, the spool,
# the generated session key) and credentials/ (OAuth refresh rewrites the files).
RUN useradd --system --uid 10001 --user-group --home-dir /app --shell /usr/sbin/nologin nexus \
    && mkdir -p /app/data /app/credentials \
    && chown nexus:nexus /app/data /app/credentials
USER nexus

ENV HOST=0.0.0.0 \
    PORT=3000 \
    LOG_FORMAT=json
EXPOSE 3000
VOLUME ["/app/data"]

# /health/ready answers 200 while serving and 503 once shutdown began (no curl in slim images).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health/ready' % os.environ.get('PORT', '3000'), timeout=4)"]

# gunicorn's master stops gracefully on SIGTERM (docker stop); give it the grace period plus
# the final write: `docker stop -t 50`, or `stop_grace_period` in compose.
STOPSIGNAL SIGTERM
ENTRYPOINT ["packaging/entrypoint.sh"]
