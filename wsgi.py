from gevent import monkey; monkey.patch_all()  # noqa: E702, I001 — must precede every other import

"""Entry point: `python wsgi.py [--env-file PATH]` serves; gunicorn and `flask --app wsgi` import
`app` from here."""

import sys

from app import create_app
from app.config import ConfigError


def _env_file(argv: list[str]) -> str:
    if "--env-file" in argv:
        index = argv.index("--env-file")
        if index + 1 < len(argv):
            return argv[index + 1]
        sys.exit("error: --env-file needs a path")
    return ".env"


try:
    app = create_app(env_file=_env_file(sys.argv) if __name__ == "__main__" else ".env")
except ConfigError as err:
    sys.exit(f"error: invalid setting {err}")


if __name__ == "__main__":
    from app.serve import serve

    sys.exit(serve(app))
