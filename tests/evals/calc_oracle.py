"""The scripted model for the eval tests' `calc` package (add() lives in calc/__init__.py)."""

from tests.bot.calc_oracle import make_responder

respond = make_responder("calc/__init__.py")
