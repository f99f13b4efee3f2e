"""The other proxies the product is measured against: nginx and the LiteLLM proxy.

Both are provisioned on first use (nginx from Debian with apt-get when running as root, LiteLLM
from PyPI into its own virtualenv `bench/.venv-litellm`), then run as our own children in a
temporary directory, in the foreground, in front of the same fake upstream as the proxy.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench.processes import HOST, ROOT, Service, clean_env, free_port

Log = Callable[[str], None]

# ----------------------------------------------------------------------------- nginx

NGINX_CONF = """\
# A plain reverse proxy in front of the fake upstream: one worker, no response buffering
# (streams pass through as they come), keep-alive on both hops.
worker_processes 1;
pid nginx.pid;
error_log error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path tmp/body;
    proxy_temp_path tmp/proxy;
    fastcgi_temp_path tmp/fastcgi;
    uwsgi_temp_path tmp/uwsgi;
    scgi_temp_path tmp/scgi;
    client_max_body_size 32m;
    client_body_buffer_size 1m;   # Claude Code's bodies (50-200 KB) stay in memory
    keepalive_requests 1000000;
    upstream fake {{
        server {host}:{upstream_port};
        keepalive 64;
        keepalive_requests 1000000;
    }}
    server {{
        listen {host}:{port};
        location / {{
            proxy_pass http://fake;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_read_timeout 600s;
        }}
    }}
}}
"""


def nginx_binary(log: Log) -> str:
    """nginx's path; installs Debian's package when it is missing and we are root."""
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None)
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        sys.exit("error: nginx is not installed: run 'apt-get install nginx' as root "
                 "(or leave it out: --targets direct,proxy-sqlite,...)")
    log("installing nginx (apt-get install nginx)...")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "nginx"]
    done = subprocess.run(install, env=env, capture_output=True, text=True)
    if done.returncode != 0:  # a stale package list: update it once and retry
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True)
        done = subprocess.run(install, env=env, capture_output=True, text=True)
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx",
                                                                       os.X_OK) else None)
    if done.returncode != 0 or not found:
        sys.exit("error: could not install nginx with apt-get: "
                 + (done.stderr or done.stdout).strip()[-500:])
    return found


def nginx_version(log: Log) -> str:
    done = subprocess.run([nginx_binary(log), "-v"], capture_output=True, text=True)
    return (done.stderr or done.stdout).strip().rpartition("/")[2] or "?"


def launch_nginx(upstream_port: int, work_dir: Path, log: Log) -> Service:
    """nginx -p DIR -c nginx.conf -g 'daemon off;' (not waited for)."""
    binary = nginx_binary(log)
    prefix = work_dir / "nginx"
    (prefix / "tmp").mkdir(parents=True, exist_ok=True)
    # As root nginx's worker runs as `nobody`: it must be able to reach its prefix.
    for path in (work_dir, prefix, prefix / "tmp"):
        path.chmod(0o755)
    port = free_port()
    (prefix / "nginx.conf").write_text(NGINX_CONF.format(host=HOST, port=port,
                                                         upstream_port=upstream_port))
    argv = [binary, "-p", f"{prefix}/", "-c", "nginx.conf", "-e", "error.log",
            "-g", "daemon off;"]
    return Service("nginx", argv, port, prefix, clean_env(), work_dir)


# ----------------------------------------------------------------------------- LiteLLM

LITELLM_VERSION = "1.82.6"  # an exact pin: 1.82.7 and 1.82.8 were malicious uploads
LITELLM_VENV = ROOT / "bench" / ".venv-litellm"
LITELLM_PREFIX = "/anthropic"  # its Anthropic pass-through route: /anthropic/v1/messages

# No model list, no database, no callbacks: only the built-in /anthropic pass-through route,
# which forwards to ANTHROPIC_API_BASE with ANTHROPIC_API_KEY. Without a master key LiteLLM
# asks clients for no key of its own.
LITELLM_CONFIG = """\
model_list: []
litellm_settings:
  telemetry: false
general_settings: {}
"""

# uvicorn's access log off (one line per request): the proxy runs with LOG_LEVEL=warning too.
LITELLM_LOG_CONFIG = """\
{"version": 1, "disable_existing_loggers": false,
 "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
 "handlers": {"err": {"class": "logging.StreamHandler", "formatter": "plain",
                      "stream": "ext://sys.stderr"}},
 "root": {"level": "WARNING", "handlers": ["err"]},
 "loggers": {"uvicorn.access": {"level": "WARNING"}, "uvicorn.error": {"level": "WARNING"}}}
"""


def litellm_python(log: Log) -> Path:
    """The LiteLLM venv's python, creating the venv (once, ~1 min) when it is missing."""
    python = LITELLM_VENV / "bin" / "python"
    stamp = LITELLM_VENV / "installed-version"
    if python.exists() and stamp.exists() and stamp.read_text().strip() == LITELLM_VERSION:
        return python
    log(f"creating {LITELLM_VENV.relative_to(ROOT)} with litellm[proxy]=={LITELLM_VERSION} "
        "from PyPI (first run only, about a minute; not counted in the bench's time)...")
    started = time.monotonic()
    shutil.rmtree(LITELLM_VENV, ignore_errors=True)
    base = getattr(sys, "_base_executable", sys.executable)
    steps = [[base, "-m", "venv", str(LITELLM_VENV)],
             [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
              f"litellm[proxy]=={LITELLM_VERSION}"]]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"error: {' '.join(step[:4])}... failed (leave LiteLLM out with "
                     "--targets direct,proxy-sqlite,proxy-pg,nginx): "
                     + (done.stderr or done.stdout).strip()[-800:])
    stamp.write_text(LITELLM_VERSION + "\n")
    log(f"LiteLLM installed in {time.monotonic() - started:.0f}s")
    return python


def launch_litellm(upstream_port: int, work_dir: Path, log: Log) -> Service:
    """`litellm --config ... --num_workers 1` (uvicorn, one process; not waited for)."""
    python = litellm_python(log)
    home = work_dir / "litellm"
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.yaml").write_text(LITELLM_CONFIG)
    (home / "logging.json").write_text(LITELLM_LOG_CONFIG)
    port = free_port()
    env = clean_env(
        ANTHROPIC_API_BASE=f"http://{HOST}:{upstream_port}",
        ANTHROPIC_API_KEY="sk-ant-bench-0000",
        LITELLM_LOCAL_MODEL_COST_MAP="True",  # the bundled price list: no fetch at start-up
        LITELLM_LOG="WARNING",
    )
    env["HOME"] = str(home)  # whatever it caches stays in the temporary directory
    argv = [str(python), str(LITELLM_VENV / "bin" / "litellm"), "--config", "config.yaml",
            "--host", HOST, "--port", str(port), "--num_workers", "1",
            "--telemetry", "False", "--log_config", "logging.json"]
    return Service("litellm", argv, port, home, env, work_dir)
