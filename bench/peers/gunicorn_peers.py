"""gunicorn settings of the peer servers (so they never read the project's gunicorn.conf.py)."""

worker_class = "uvicorn.workers.UvicornWorker"
graceful_timeout = 3
loglevel = "warning"
