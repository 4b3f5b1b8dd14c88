"""gunicorn settings from the environment: ``WEB_CONCURRENCY`` workers of ``app.server.ChatWorker``.

Run: ``gunicorn -c gunicorn.conf.py app.main:app``. Many connections per host: docs/scaling.md.
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
# Connections the kernel queues before a worker accepts them: after a deploy or an outage every client
# reconnects at once, and a full queue drops them. uvicorn listens with the same value (uvicorn-worker
# passes it on); the kernel caps it at net.core.somaxconn.
backlog = int(os.environ.get("BACKLOG", "2048"))


def on_starting(server):  # type: ignore[no-untyped-def]
    """Once, in the master before it forks: the open-file limit raised to the hard one (the workers inherit
    it; each client is a descriptor) and the host's limits logged; one metrics directory for every worker."""
    from app.oslimits import listen_queue_cap, raise_open_file_limit

    before, after, hard = raise_open_file_limit()
    if after < hard:
        server.log.warning("open-file limit left at %d (hard %d): about that many clients per worker", after, hard)
    else:
        server.log.info("open-file limit %d (was %d)", after, before)
    cap = listen_queue_cap()
    if cap is not None and cap < backlog:
        server.log.warning("listen backlog %d is cut to net.core.somaxconn = %d", backlog, cap)
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
