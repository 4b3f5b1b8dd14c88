"""Accounts: users with argon2id passwords, sessions carried in tokens, roles, private rooms."""
