import subprocess
import sys
import time

import psycopg2
import pytest

from app.auth.locks import AdvisoryLock, FileLock, LockTimeout, advisory_key

HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_CREAT | os.O_RDWR)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(float(sys.argv[2]))
"""


def test_file_lock_waits_for_another_process(tmp_path):
    path = tmp_path / "x.lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), "0.6"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    started = time.monotonic()
    with FileLock(path, timeout=10):
        waited = time.monotonic() - started
    holder.wait()
    assert waited >= 0.3


def test_file_lock_times_out(tmp_path):
    path = tmp_path / "y.lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), "3"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(LockTimeout):
        with FileLock(path, timeout=0.3):
            pass
    holder.kill()
    holder.wait()


def test_advisory_key_is_stable_and_signed_64_bit():
    assert advisory_key("a") == advisory_key("a") != advisory_key("b")
    assert -(2 ** 63) <= advisory_key("a") < 2 ** 63


def test_advisory_lock_excludes_other_sessions(postgres_dsn):
    other = psycopg2.connect(postgres_dsn)
    other.autocommit = True
    with AdvisoryLock(postgres_dsn, "oauth-refresh:team.example.com"):
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s)",
                           (advisory_key("oauth-refresh:team.example.com"),))
            assert cursor.fetchone()[0] is False
        with pytest.raises(LockTimeout):
            with AdvisoryLock(postgres_dsn, "oauth-refresh:team.example.com", timeout=0.2):
                pass
    with other.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)",
                       (advisory_key("oauth-refresh:team.example.com"),))
        assert cursor.fetchone()[0] is True
    other.close()
