from gevent import monkey; monkey.patch_all()  # noqa: E702, I001 — must precede every other import

"""Entry point: `python wsgi.py [--env-file PATH]` serves; gunicorn and `flask --app wsgi` import
`app` from here."""

import argparse
import sys

from app import create_app
from app.config import ConfigError


def _create(env_file: str):
    try:
        return create_app(env_file=env_file)
    except ConfigError as err:
        sys.exit(f"error: invalid setting {err}")


if __name__ == "__main__":
    from app.serve import serve

    parser = argparse.ArgumentParser(
        prog="python wsgi.py",
        description="Serve Claude Nexus Proxy with gevent (settings: environment and .env).")
    parser.add_argument("--env-file", default=".env", metavar="PATH",
                        help="read settings from this file (default: .env, if present)")
    app = _create(parser.parse_args().env_file)
    sys.exit(serve(app))
else:
    app = _create(".env")
