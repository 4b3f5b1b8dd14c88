"""Celery fan-out jobs that publish to WebSocket clients through the channel layer.

The post-generation hook deletes this package when ``use_celery=no``; nothing else imports it.
"""
