"""Local stand-ins for the outside world of the two field cases (see ../README.md).

They are real servers on loopback (HTTP, SMTP, a Postgres database), started by
``stead demo content|commerce`` and by the end-to-end tests, never imported by the
runtime packages.
"""
