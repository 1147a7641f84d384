"""``python -m stead.cli`` runs the same app as the ``stead`` console script."""

from stead.cli.main import app

app(prog_name="stead")
