"""Django's PostgreSQL backend with two costs of every request and task taken out (base.py)."""
