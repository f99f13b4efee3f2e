#!/bin/sh
# The Docker image's entrypoint: apply pending migrations, waiting for the database to answer
# (a PostgreSQL container starting beside this one), then serve with gunicorn.
# With arguments, run those instead: `docker run IMAGE flask --app wsgi users create alice`.
set -eu

if [ "$#" -gt 0 ]; then
  exec "$@"
fi

root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python}

"$python" -m flask --app "$root/wsgi.py" db upgrade --wait "${DATABASE_WAIT_S:-60}"
# gunicorn's own start-up check of the migrations is then skipped.
NEXUS_MIGRATED=1 exec "$python" -m gunicorn -c "$root/packaging/gunicorn.conf.py" wsgi:app
