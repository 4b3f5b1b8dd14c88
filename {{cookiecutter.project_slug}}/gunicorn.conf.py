"""gunicorn settings from the environment: ``WEB_CONCURRENCY`` workers of ``app.server.ChatWorker``.

Run: ``gunicorn -c gunicorn.conf.py app.main:app``.
"""

import os
import shutil
import tempfile

bind = os.environ.get("BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "1"))
worker_class = "app.server.ChatWorker"
graceful_timeout = int(os.environ.get("GRACEFUL_TIMEOUT", "10"))
timeout = int(os.environ.get("WORKER_TIMEOUT", "30"))
keepalive = 5
accesslog = os.environ.get("ACCESS_LOG", "-") or None
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")


def on_starting(server):  # type: ignore[no-untyped-def]
    """Every worker writes its metrics to one shared directory, emptied at start."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or tempfile.mkdtemp(prefix="chat-metrics-")
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    # Imported now (the directory set first): child_exit runs in the SIGCHLD handler, and a second
    # worker exiting during a first import there re-enters it ("partially initialized module").
    import prometheus_client.multiprocess  # noqa: F401


def child_exit(server, worker):  # type: ignore[no-untyped-def]
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
