"""Durable chat messages: stored with a per-stream ``seq`` before the layer fans them out."""
