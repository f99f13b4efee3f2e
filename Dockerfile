# Claude Nexus Proxy — container image.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOST=0.0.0.0 \
    PORT=3000 \
    LOG_FORMAT=json

WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt \
    && useradd --system --uid 10001 --home-dir /app nexus
COPY --chown=nexus:nexus . .

USER nexus
EXPOSE 3000
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health/live' % os.environ.get('PORT', '3000'), timeout=4)"
# SIGTERM starts the graceful shutdown (SHUTDOWN_GRACE_S); give it time: docker stop -t 40
STOPSIGNAL SIGTERM
CMD ["python", "wsgi.py"]
