"""gunicorn settings for production: `gunicorn -c packaging/gunicorn.conf.py wsgi:app`.

Everything comes from the proxy's own settings (environment and `.env`, app/config.py): the
listen address, WEB_CONCURRENCY gevent workers of WORKER_CONNECTIONS connections each, and a
graceful timeout that covers SHUTDOWN_GRACE_S plus the time to write the queued rows. Each
worker serves with app/gunicorn_worker.py's Worker (the proxy's own gevent server, psycopg2
made cooperative as the app is built after gevent's patching).

Before the workers start, pending migrations are applied once, retried until the database
answers (up to DATABASE_WAIT_S), unless the Docker entrypoint has just done it.
"""

import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # the app, whatever the working directory

from app.config import ConfigError, load_settings  # noqa: E402

DATABASE_WAIT_S = 60
WRITE_QUEUE_S = 15  # after the grace: the writer's final flush, or spooling what is left

try:
    _settings = load_settings()
except ConfigError as err:
    sys.exit(f"error: invalid setting {err}")

_host = _settings.host
bind = [f"[{_host}]:{_settings.port}" if ":" in _host else f"{_host}:{_settings.port}"]
workers = _settings.web_concurrency
pythonpath = ROOT       # where `wsgi:app` is
worker_class = "app.gunicorn_worker.Worker"
worker_connections = _settings.worker_connections
timeout = 30            # heartbeat: a worker that stops reporting this long is restarted
graceful_timeout = int(_settings.shutdown_grace_s) + WRITE_QUEUE_S
control_socket_disable = True  # nothing to control it with in a container; no stray socket
logger_class = "app.gunicorn_worker.Logger"
accesslog = None
errorlog = "-"
loglevel = _settings.log_level
proc_name = "claude-nexus-proxy"


def on_starting(server):
    """In the master, before any worker: the metrics folder, then the migrations."""
    _metrics_folder()
    if os.environ.get("NEXUS_MIGRATED") == "1":
        return  # the Docker entrypoint applied them a moment ago
    _upgrade(server)


def child_exit(server, worker):
    """A worker's live gauges leave the /metrics sums when it exits, crashed ones too."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def _metrics_folder() -> None:
    """prometheus_client's multi-process mode: every worker's counters in one folder, summed
    by whichever worker is scraped. Emptied at each start (old files would count again)."""
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not folder:
        folder = tempfile.mkdtemp(prefix="nexus-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
    os.makedirs(folder, exist_ok=True)
    for name in os.listdir(folder):
        if name.endswith(".db"):
            os.unlink(os.path.join(folder, name))


def _upgrade(server) -> None:
    """`flask db upgrade` in a child process (the master must not import the app: that would
    patch the master with gevent), waiting up to DATABASE_WAIT_S for the database."""
    done = subprocess.run([sys.executable, "-m", "flask", "--app", os.path.join(ROOT, "wsgi.py"),
                           "db", "upgrade", "--wait", str(DATABASE_WAIT_S)],
                          stdout=subprocess.PIPE, text=True)  # its waiting lines: our stderr
    if done.returncode != 0:
        sys.exit(1)  # its one-line error is already on stderr
    server.log.info("migrations: %s", " ".join(done.stdout.split()))
