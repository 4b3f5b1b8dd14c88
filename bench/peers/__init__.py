"""Peer WebSocket chat servers for bench/ws_load.py (they run in the peers' virtualenv)."""
